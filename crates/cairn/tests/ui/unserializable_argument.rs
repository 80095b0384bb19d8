// Workflow arguments are recorded as JSON.

struct Order {
    id: u64,
}

#[cairn::workflow]
async fn checkout(order: Order) -> Result<u64, cairn::Error> {
    Ok(order.id)
}

fn main() {}
