//! Misuses of the DSL that must not compile, each in tests/ui/*.rs with the
//! compiler's message in the matching .stderr (regenerate with
//! `TRYBUILD=overwrite cargo test -p weir-topology --test compile_fail`
//! and review the messages), and the correct forms in tests/ui/pass.rs.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass.rs");
    t.compile_fail("tests/ui/stream_join_filtered_table.rs");
    t.compile_fail("tests/ui/stream_join_windowed_table.rs");
    t.compile_fail("tests/ui/table_join_mapped_table.rs");
    t.compile_fail("tests/ui/table_join_unmaterialized_result.rs");
    t.compile_fail("tests/ui/fk_join_filtered_right_table.rs");
    t.compile_fail("tests/ui/suppress_mapped_windowed_table.rs");
    t.compile_fail("tests/ui/aggregate_ungrouped_stream.rs");
    t.compile_fail("tests/ui/join_streams_different_keys.rs");
}
