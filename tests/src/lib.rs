//! End-to-end tests live in tests/tests/; fixtures are built by src/fixtures.rs. OWNER: helper "e2e".
