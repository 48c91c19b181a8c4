//! Trailmark's integration tests: one binary, so the suite links once.
//!
//! Storage tests run against SQLite by default and against PostgreSQL when
//! `TRAILMARK_TEST_DATABASE_URL` is set (a fresh database per test on that
//! server); `.ci/run` runs the suite both ways.

mod api;
mod architecture;
mod compliance_property;
mod console;
mod controls;
mod crash;
mod files;
mod harness;
mod integration;
mod people;
mod property;
mod reports;
mod tamper;
mod tls;
mod validation;
mod vectors;
