// `start` accepts only #[cairn::workflow] functions.

async fn checkout(order: u64) -> Result<u64, cairn::Error> {
    Ok(order)
}

async fn run(app: cairn::Cairn) -> cairn::Result<()> {
    app.start(checkout, 42).await?;
    Ok(())
}

fn main() {
    let _ = run;
}
