// A workflow's error is recorded with its value: it must be serde + Display.

#[derive(Debug)]
struct PaymentError;

impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("declined")
    }
}

#[cairn::workflow]
async fn checkout(order: u64) -> Result<u64, PaymentError> {
    Ok(order)
}

fn main() {}
