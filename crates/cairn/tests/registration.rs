//! Registration mistakes are caught at launch: two workflow functions under one name — on
//! SQLite and on Postgres. (A program of its own, since such a program cannot launch at all.)

mod common;

use cairn::Error;
use common::TestDb;

#[cairn::workflow(name = "checkout")]
async fn checkout_v1(order: u64) -> Result<u64, cairn::Error> {
    Ok(order)
}

mod orders {
    #[cairn::workflow]
    pub async fn checkout(order: u64) -> Result<u64, cairn::Error> {
        Ok(order + 1)
    }
}

/// Two workflows registered under the same name make `launch()` fail with an error naming
/// both functions, instead of one silently winning (recovery finds functions by name).
async fn two_workflows_with_one_name_refuse_to_launch(db: &TestDb) {
    let _ = (checkout_v1, orders::checkout);
    match db.builder("cairn-test").launch().await {
        Err(Error::DuplicateWorkflowName {
            name,
            first,
            second,
        }) => {
            assert_eq!(name, "checkout");
            assert_eq!(first, "registration::checkout_v1");
            assert_eq!(second, "registration::orders::checkout");
            let message = Error::DuplicateWorkflowName {
                name,
                first,
                second,
            }
            .to_string();
            assert!(message.contains("#[cairn::workflow(name = "), "{message}");
        }
        Err(other) => panic!("expected DuplicateWorkflowName, got {other}"),
        Ok(app) => {
            app.shutdown().await.unwrap();
            panic!("launched with two workflows named `checkout`");
        }
    }
}

both_backends!(two_workflows_with_one_name_refuse_to_launch);
