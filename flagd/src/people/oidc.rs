//! Single sign-on with an OpenID Connect provider (Google, Microsoft Entra, Okta,
//! Keycloak, GitLab, Dex, ...): the authorization code flow with PKCE, through the
//! `openidconnect` crate, which checks the ID token's signature against the provider's
//! published keys, its issuer, audience, nonce and expiry. The role comes from an admin
//! (who created the account) or from a claim of the ID token mapped by `--oidc-role`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::auth;
use crate::error::ApiError;
use crate::store::OidcIdentity;

/// How long a sign-in may take at the provider.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the provider's metadata and keys are used before being fetched again (a
/// key the provider rotated in is also fetched at once, on the first token it signs).
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// One claim value mapped to a role, limited to some environments or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleMapping {
    /// The claim value (a group name, say).
    pub value: String,
    /// The role it gives.
    pub role: String,
    /// The environments it is limited to; `None` for all.
    pub environments: Option<Vec<String>>,
}

impl RoleMapping {
    /// Parses `VALUE=ROLE` or `VALUE=ROLE@env1,env2`; `*` as the value matches everyone
    /// the provider vouches for.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (value, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected VALUE=ROLE or VALUE=ROLE@env1,env2"))?;
        let (role, envs) = match rest.split_once('@') {
            Some((r, e)) => {
                let list: Vec<String> = e
                    .split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect();
                if list.is_empty() {
                    return Err(format!("{s:?}: no environment after '@'"));
                }
                (r, Some(list))
            }
            None => (rest, None),
        };
        let role = role.trim();
        if auth::person_role(role).is_none() {
            return Err(format!(
                "{s:?}: {role:?} is not a role a person may have (viewer, editor, responder, ci, admin)"
            ));
        }
        if value.trim().is_empty() {
            return Err(format!("{s:?}: the claim value is empty"));
        }
        Ok(Self {
            value: value.trim().to_owned(),
            role: role.to_owned(),
            environments: envs,
        })
    }
}

/// The provider, as configured.
#[derive(Clone, Debug)]
pub struct OidcOptions {
    /// Its issuer URL (`https://accounts.google.com`).
    pub issuer: String,
    /// flagd's client id there.
    pub client_id: String,
    /// flagd's client secret there (`None` for a public client, PKCE only).
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back: `{public URL}/api/v1/session/oidc/callback`.
    pub redirect_url: String,
    /// The name on the sign-in button.
    pub display_name: String,
    /// The ID token's claim the role mappings read (`groups`; a dotted path such as
    /// `realm_access.roles` reaches into an object).
    pub role_claim: String,
    /// Claim values to roles, the first that matches wins.
    pub roles: Vec<RoleMapping>,
}

/// The provider and what was learnt of it.
pub struct Oidc {
    /// Its configuration.
    pub options: OidcOptions,
    http: openidconnect::reqwest::Client,
    metadata: Mutex<Option<(Instant, Arc<CoreProviderMetadata>)>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.options.issuer)
            .finish_non_exhaustive()
    }
}

/// A sign-in sent to the provider: where to send the browser, and what to keep.
#[derive(Debug)]
pub struct Begun {
    /// The provider's authorization URL.
    pub url: String,
    /// The `state` (its hash is kept; the callback brings it back).
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
}

fn refused(why: impl std::fmt::Display) -> ApiError {
    ApiError::Unauthorized(format!("single sign-on failed: {why}"))
}

impl Oidc {
    /// A provider, reached lazily: flagd starts, and serves its SDKs and tokens, with the
    /// identity provider down.
    pub fn new(options: OidcOptions) -> anyhow::Result<Self> {
        IssuerUrl::new(options.issuer.clone())
            .map_err(|e| anyhow::anyhow!("--oidc-issuer {:?}: {e}", options.issuer))?;
        RedirectUrl::new(options.redirect_url.clone())
            .map_err(|e| anyhow::anyhow!("the redirect URL {:?}: {e}", options.redirect_url))?;
        // No redirects: a token endpoint that redirects is an attack (SSRF), per the
        // crate's own advice.
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            options,
            http,
            metadata: Mutex::new(None),
        })
    }

    async fn metadata(&self, fresh: bool) -> Result<Arc<CoreProviderMetadata>, ApiError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && !fresh
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.options.issuer.clone()).map_err(refused)?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "the identity provider {} cannot be reached: {e}",
                    self.options.issuer
                ))
            })?;
        let m = Arc::new(m);
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(
        &self,
        m: &CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        ApiError,
    > {
        let redirect = RedirectUrl::new(self.options.redirect_url.clone()).map_err(refused)?;
        Ok(CoreClient::from_provider_metadata(
            m.clone(),
            ClientId::new(self.options.client_id.clone()),
            self.options.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: the URL to send the browser to, with a new state, nonce and
    /// PKCE challenge.
    pub async fn begin(&self) -> Result<Begun, ApiError> {
        let m = self.metadata(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client(&m)?
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Begun {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Ends a sign-in: exchanges the code, verifies the ID token (signature, issuer,
    /// audience, nonce, expiry) and says who it names and what role their claims give.
    pub async fn finish(
        &self,
        code: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<OidcIdentity, ApiError> {
        let m = self.metadata(false).await?;
        let client = self.client(&m)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(refused)?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| refused(format!("the provider refused the code: {e}")))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| refused("the provider sent no ID token"))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // Signed with a key published since the keys were fetched: fetch them once
                // more, and verify again.
                let m = self.metadata(true).await?;
                let client = self.client(&m)?;
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| refused(format!("the ID token is not valid: {e} ({first})")))?
                    .clone()
            }
        };
        let email = claims
            .email()
            .filter(|_| claims.email_verified() != Some(false))
            .map(|e| e.as_str().to_lowercase());
        let subject = claims.subject().as_str().to_owned();
        let login = email
            .clone()
            .or_else(|| {
                claims
                    .preferred_username()
                    .map(|u| u.as_str().to_lowercase())
            })
            .unwrap_or_else(|| subject.clone());
        let login = super::normalize_login("login", &login).map_err(|_| {
            refused(format!(
                "the provider's name for this person ({login:?}) is not a valid login"
            ))
        })?;
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .unwrap_or_else(|| login.clone());
        // The signature is verified above; the role claim is read from the same token's
        // payload, whatever its shape.
        let payload = payload_of(&id_token.to_string());
        let values = payload
            .as_ref()
            .map(|p| claim_values(p, &self.options.role_claim))
            .unwrap_or_default();
        Ok(OidcIdentity {
            issuer: claims.issuer().as_str().to_owned(),
            subject,
            login,
            name,
            email,
            mapped: map_role(&self.options.roles, &values),
        })
    }
}

/// The JSON payload of a compact JWS.
fn payload_of(jwt: &str) -> Option<Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The string values of a claim (a string or a list of strings), by dotted path.
pub fn claim_values(payload: &Value, path: &str) -> Vec<String> {
    let mut v = payload;
    for part in path.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => return Vec::new(),
        }
    }
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The first mapping whose value the claim holds (`*` matches anyone).
pub fn map_role(roles: &[RoleMapping], values: &[String]) -> Option<(String, Option<Vec<String>>)> {
    roles
        .iter()
        .find(|m| m.value == "*" || values.contains(&m.value))
        .map(|m| (m.role.clone(), m.environments.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_and_match() {
        let m = RoleMapping::parse("sre=responder@production,staging").unwrap();
        assert_eq!(m.role, "responder");
        assert_eq!(
            m.environments,
            Some(vec!["production".into(), "staging".into()])
        );
        assert!(RoleMapping::parse("sre=sdk").is_err());
        assert!(RoleMapping::parse("sre").is_err());
        assert!(RoleMapping::parse("=admin").is_err());
        assert!(RoleMapping::parse("sre=responder@").is_err());
        let roles = vec![
            RoleMapping::parse("flag-admins=admin").unwrap(),
            RoleMapping::parse("*=viewer").unwrap(),
        ];
        assert_eq!(
            map_role(&roles, &["flag-admins".into()]).unwrap().0,
            "admin"
        );
        assert_eq!(map_role(&roles, &[]).unwrap().0, "viewer");
        assert_eq!(map_role(&roles[..1], &["dev".into()]), None);
    }

    #[test]
    fn claims_by_path() {
        let p = serde_json::json!({"groups": ["a", "b"], "realm_access": {"roles": ["sre"]}, "team": "x"});
        assert_eq!(claim_values(&p, "groups"), vec!["a", "b"]);
        assert_eq!(claim_values(&p, "realm_access.roles"), vec!["sre"]);
        assert_eq!(claim_values(&p, "team"), vec!["x"]);
        assert!(claim_values(&p, "missing.x").is_empty());
        let jwt = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"groups":["g"]}"#)
        );
        assert_eq!(
            claim_values(&payload_of(&jwt).unwrap(), "groups"),
            vec!["g"]
        );
    }
}
