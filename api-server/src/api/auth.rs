//! Bearer authentication of writes.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use subtle::ConstantTimeEq;

/// The token writes must present, shared with handlers through request data.
#[derive(Clone)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// `Authorization: Bearer <API_TOKEN>`, required by every write.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_token")]
pub struct WriteAuth(());

/// Constant-time comparison, so response timing does not reveal how much of a guessed
/// token was right.
async fn check_token(req: &Request, bearer: Bearer) -> Option<()> {
    let expected = req.data::<ApiToken>()?;
    bool::from(expected.0.as_bytes().ct_eq(bearer.token.as_bytes())).then_some(())
}
