// A workflow or step must say how it fails.

#[cairn::workflow]
async fn no_return_type(order: u64) {
    let _ = order;
}

#[cairn::step]
async fn not_a_result(order: u64) -> u64 {
    order
}

fn main() {}
