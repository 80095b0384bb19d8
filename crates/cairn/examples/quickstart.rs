//! The quickstart: a checkout workflow of three checkpointed steps on the embedded SQLite
//! default (`shop.sqlite` in the working directory; no set-up).
//!
//! Run: `cargo run --example quickstart`

use cairn::{Cairn, StartOptions};

/// The shop's own errors. They are recorded with each step's outcome (hence serde), so a
/// replay after a crash returns the very same variant.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum ShopError {
    #[error("card declined for order {0}")]
    Declined(u64),
}

#[cairn::step]
async fn reserve_stock(order: u64) -> Result<u32, ShopError> {
    println!("  step reserve_stock({order}): reserving 2 items");
    Ok(2)
}

#[cairn::step(max_attempts = 3, interval_ms = 100)]
async fn charge_card(order: u64, items: u32) -> Result<String, ShopError> {
    if order == 0 {
        return Err(ShopError::Declined(order));
    }
    println!("  step charge_card({order}): charging for {items} items");
    Ok(format!("receipt-{order}-{items}"))
}

#[cairn::step]
async fn send_confirmation(order: u64, receipt: String) -> Result<(), ShopError> {
    println!("  step send_confirmation({order}): mailing {receipt}");
    Ok(())
}

/// Reserve, charge, confirm: each step's outcome is recorded before the next one starts.
#[cairn::workflow]
async fn checkout(order: u64) -> Result<String, ShopError> {
    let items = reserve_stock(order).await?;
    let receipt = charge_card(order, items).await?;
    send_confirmation(order, receipt.clone()).await?;
    Ok(receipt)
}

#[tokio::main]
async fn main() -> cairn::Result<()> {
    let app = Cairn::builder("shop").launch().await?;
    println!(
        "launched on {} (application version {})",
        app.backend(),
        app.app_version()
    );

    // A caller-chosen id is an idempotency key: run this example twice and the second run
    // returns the recorded result without running a single step.
    let order = 42;
    let handle = app
        .start_with(
            StartOptions::id(format!("checkout-{order}")),
            checkout,
            order,
        )
        .await?;
    println!("workflow {} started", handle.id());
    let receipt = handle.result().await?;
    println!("workflow {} finished: {receipt}", handle.id());

    for step in app.list_steps(handle.id()).await? {
        println!(
            "  recorded step {} {:<18} -> {}",
            step.function_id,
            step.name,
            step.raw_output.unwrap_or_default()
        );
    }
    let status = handle.status().await?;
    println!(
        "status {} after {} attempt(s)",
        status.state, status.recovery_attempts
    );
    app.shutdown().await
}
