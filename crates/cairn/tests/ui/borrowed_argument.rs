// Workflow arguments are recorded and decoded again at recovery: they must be owned.

#[cairn::workflow]
async fn greet(name: &str) -> Result<String, cairn::Error> {
    Ok(format!("hello {name}"))
}

#[cairn::workflow]
async fn total(prices: &[u64]) -> Result<u64, cairn::Error> {
    Ok(prices.iter().sum())
}

#[cairn::workflow]
async fn note(text: std::borrow::Cow<'_, str>) -> Result<String, cairn::Error> {
    Ok(text.into_owned())
}

fn main() {}
