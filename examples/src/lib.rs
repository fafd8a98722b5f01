//! Orders: a second entity kept coherent by [`cache_service::coherence`], with no
//! `product-service` involved. It shows that the cache's guarantees come from the
//! component, not from anything product-specific.
//!
//! # Layout
//!
//! - [`domain`]: parsed inputs ([`OrderId`], [`CustomerId`], [`TotalCents`],
//!   [`OrderStatus`], [`CustomerPage`], …) whose errors name the field.
//! - [`service`]: [`OrderService`]: reads through the cache (an order by id, a customer's
//!   list pages), and every write through one method: transaction, commit, then
//!   [`Coherence::after_commit`](cache_service::Coherence::after_commit).
//! - [`schema`]: [`connect`], [`migrate`] (the coherence tables, `orders`, and the
//!   triggers [`ORDERS_TABLE`] generates), and the private sea-orm entity.
//!
//! # Invariants
//!
//! 1. **Invalidate after commit.** A write's invalidation (the order's key, fenced at
//!    its new version, and the [`ORDER_PAGE`] group) runs after its transaction
//!    committed; a rolled-back write invalidates nothing.
//! 2. **No stale set.** A read whose database query ran before a write committed cannot
//!    store what it read after that write's invalidation.
//! 3. **Writers outside the service count too.** The triggers record, in the writer's
//!    own transaction, what every change of `orders` owes, whoever writes (`psql`, an
//!    admin tool); the relay applies it.
//! 4. **Outages delay, never lose.** With the cache down, writes succeed and reads go to
//!    the database; after it, reads stay off the cache until what is owed is applied.
//!
//! Outside this crate the entity's write side cannot be named, so writing an order
//! through this crate's types means [`OrderService`]:
//!
//! ```compile_fail
//! use orders_example::schema::order::ActiveModel;
//! ```

pub mod domain;
pub mod schema;
pub mod service;

mod error;

pub use domain::{
    CustomerId, CustomerPage, NewOrder, OrderId, OrderStatus, TotalCents, ValidationError, Version,
};
pub use error::{Error, Result};
pub use schema::{connect, migrate};
pub use service::{ORDER, ORDER_PAGE, ORDERS_TABLE, Order, OrderPage, OrderService};
