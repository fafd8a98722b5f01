//! The orders example keeps the cache's promises with nothing but
//! `cache_service::coherence`: each scenario runs on SQLite and on PostgreSQL, against a
//! private `redis-server` it may stop and restart.

#[macro_use]
mod support;

mod coexist;
mod demo;
mod failed_writes;
mod outage;
mod outside_writers;
mod pages;
mod races;
