// Options are checked by name, and an option of the other attribute says so.

#[cairn::workflow(max_attempts = 3)]
async fn checkout(order: u64) -> Result<u64, cairn::Error> {
    Ok(order)
}

#[cairn::step(retries = 3)]
async fn charge(order: u64) -> Result<u64, cairn::Error> {
    Ok(order)
}

fn main() {}
