// A generic workflow cannot be recovered (its arguments decode into one concrete type).

#[cairn::workflow]
async fn resize<T: serde::Serialize + serde::de::DeserializeOwned>(image: T) -> Result<T, cairn::Error> {
    Ok(image)
}

#[cairn::step]
async fn store<T: serde::Serialize + serde::de::DeserializeOwned>(value: T) -> Result<T, cairn::Error> {
    Ok(value)
}

fn main() {}
