//! A daemon of your own with two joins: a foreign-key join of two tables
//! and a stream joined with a global table.
//!
//! ```sh
//! cargo run -p orders -- run orders        # on an embedded broker
//! ```

use serde::{Deserialize, Serialize};
use weir::prelude::*;

/// A value of the `orders` topic: `{"customer": "c1", "amount": 12}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub customer: String,
    pub amount: u64,
}

/// Two joins:
///
/// - every order (`orders`, keyed by order id, a JSON [`Order`]) joined
///   with its customer's name (`customers`, keyed by customer id) to
///   `orders-enriched` as `CUSTOMER NAME AMOUNT`; a renamed customer
///   re-emits each of its orders. The joined table is queryable at
///   `/stores/orders-enriched`.
/// - every payment (`payments`, keyed by payment id, `CODE AMOUNT`)
///   converted with the rate of its currency (the global table
///   `currencies`, code to rate) to `payments-converted` as
///   `CODE AMOUNT * RATE = CONVERTED`; a payment in an unknown currency is
///   dropped.
pub fn orders() -> Result<Topology, TopologyError> {
    let mut b = StreamsBuilder::new();

    let customers = b.table::<String, String>(
        "customers",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("customers"),
    );
    let orders = b.table::<String, Order>(
        "orders",
        Serdes::string(),
        Serdes::json(),
        Materialized::named("orders"),
    );
    orders
        .fk_join(
            &customers,
            |o: &Order| o.customer.clone(),
            |o: &Order, name: &String| format!("{} {} {}", o.customer, name, o.amount),
            FkJoined::materialized(Materialized::named("orders-enriched"), Serdes::string()),
        )
        .to_stream()
        .to("orders-enriched", Serdes::string(), Serdes::string());

    let currencies = b.global_table::<String, String>(
        "currencies",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("currencies"),
    );
    b.stream::<String, String>("payments", Serdes::string(), Serdes::string())
        .join_global(
            &currencies,
            |_, payment: &String| payment.split_whitespace().next().unwrap_or_default().to_string(),
            |_, payment: String, rate: String| convert(&payment, &rate),
        )
        .to("payments-converted", Serdes::string(), Serdes::string());

    b.build()
}

/// `"EUR 100"` at rate `"1.10"`: `"EUR 100 * 1.10 = 110.00"`.
fn convert(payment: &str, rate: &str) -> String {
    let amount = payment.split_whitespace().nth(1).and_then(|a| a.parse::<f64>().ok());
    match (amount, rate.trim().parse::<f64>()) {
        (Some(amount), Ok(r)) => format!("{payment} * {rate} = {:.2}", amount * r),
        _ => format!("{payment} * {rate} = invalid"),
    }
}

fn main() -> std::process::ExitCode {
    weir::Daemon::new()
        .register(
            "orders",
            "orders joined with their customers' names (foreign key), payments converted with a global table of rates",
            orders,
        )
        .main()
}
