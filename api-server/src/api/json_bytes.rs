//! Response bodies that are JSON already: a cached entry's bytes, sent as they are.

use std::marker::PhantomData;

use bytes::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::Serialize;

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A JSON response body whose bytes are ready, documented with the schema of `T`.
///
/// The bytes come from `serde` (the cache stores what the service's types serialize
/// to), while `T` is the poem-openapi type that documents them; a test per resource
/// checks that both agree on an example.
pub struct JsonBytes<T> {
    bytes: Bytes,
    schema: PhantomData<fn() -> T>,
}

impl<T> JsonBytes<T> {
    /// Bytes that are already the JSON of a `T`.
    pub fn new(bytes: Bytes) -> Self {
        Self {
            bytes,
            schema: PhantomData,
        }
    }

    /// Serializes `value`, whose JSON has `T`'s shape.
    pub fn encode(value: &impl Serialize) -> serde_json::Result<Self> {
        serde_json::to_vec(value).map(|json| Self::new(json.into()))
    }
}

impl<T: Type> Payload for JsonBytes<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T> IntoResponse for JsonBytes<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(CONTENT_TYPE)
            .body(self.bytes)
    }
}
