// The correct forms of what the compile_fail cases get wrong.
use std::time::Duration;
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();

    // Tables that name no state are `Stored` (the default): joinable.
    let users: KTable<String, String> =
        b.table("users", Serdes::string(), Serdes::string(), Materialized::named("users"));
    let plans: KTable<String, String, Stored> =
        b.table("plans", Serdes::string(), Serdes::string(), Materialized::named("plans"));

    // Stream–table joins on a stored table, then derive from the result.
    let clicks = b.stream::<String, String>("clicks", Serdes::string(), Serdes::string());
    clicks
        .clone()
        .left_join(&users, |_, click, user| format!("{click}:{user:?}"))
        .to("clicks-users", Serdes::string(), Serdes::string());
    clicks
        .select_key(|_, v| v.clone())
        .join_with(
            &users,
            |_, click, user| format!("{click}:{user}"),
            Joined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("clicks-users-2", Serdes::string(), Serdes::string());

    // Table–table joins: a materialized result is stored and joinable
    // again; an unmaterialized one is derived.
    let user_plans = users.join(
        &plans,
        |u, p| format!("{u}:{p}"),
        TableJoined::materialized(Materialized::named("user-plans"), Serdes::string()),
    );
    let again: KTable<String, String, Derived> =
        user_plans.left_join(&plans, |up, p| format!("{up}:{p:?}"), TableJoined::unmaterialized());
    let derived: KTable<String, u64, Derived> = again
        .filter(|_, v| !v.is_empty())
        .map_values(|_, v| v.len() as u64);
    derived.to("lengths", Serdes::string(), Serdes::u64());

    // A derived table can still be the left side of a foreign-key join
    // (its value serde is kept by filter), grouped, streamed and written.
    let active = users.filter(|_, v| !v.is_empty());
    active
        .fk_join(&plans, String::clone, |u, p| format!("{u}{p}"), FkJoined::unmaterialized())
        .to("user-plan-names", Serdes::string(), Serdes::string());
    active
        .group_by(|_, v| (v.clone(), ()), Serdes::string(), Serdes::unit())
        .count(Materialized::named("per-name"))
        .join(&users, |n, u| format!("{n}{u}"), TableJoined::unmaterialized())
        .to_stream()
        .to("per-name-users", Serdes::string(), Serdes::string());

    // Choosing materialization at run time: both branches typed `Derived`.
    let materialize = std::env::args().count() > 1;
    let joined = if materialize {
        TableJoined::materialized(Materialized::named("maybe"), Serdes::string()).into_derived()
    } else {
        TableJoined::unmaterialized()
    };
    let _: KTable<String, String, Derived> = users.join(&plans, |u, p| format!("{u}{p}"), joined);

    // Suppress straight after the windowed aggregation, then map.
    let counts: KTable<Windowed<String>, u64, WindowStored> = b
        .stream::<String, String>("events", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(TimeWindows::of(Duration::from_secs(60)).unwrap())
        .count(Materialized::named("counts"));
    counts
        .suppress(Suppressed::until_window_closes())
        .map_values(|_, n| n * 2)
        .to_stream()
        .to("final-counts", Serdes::windowed(Serdes::string()), Serdes::u64());

    // Aggregate a grouped stream; join streams of one key type.
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    let payments = b.stream::<u64, String>("payments", Serdes::u64(), Serdes::string());
    orders
        .clone()
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("orders-per-key"))
        .to_stream()
        .to("orders-per-key", Serdes::string(), Serdes::u64());
    orders
        .join_stream(
            payments.select_key(|k, _| k.to_string()),
            |_, o, p| format!("{o}{p}"),
            JoinWindows::of(Duration::from_secs(60)).unwrap(),
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("orders-payments", Serdes::string(), Serdes::string());

    b.build().unwrap();
}
