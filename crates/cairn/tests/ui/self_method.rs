// Cairn calls a workflow by name alone, with no receiver.

struct Shop;

impl Shop {
    #[cairn::workflow]
    async fn checkout(&self, order: u64) -> Result<u64, cairn::Error> {
        Ok(order)
    }
}

fn main() {}
