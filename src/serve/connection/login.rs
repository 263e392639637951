//! A client's login: the startup packet's database and user, TLS for other machines, the
//! throttle of failed logins, and the password, which is an API token checked with the API
//! (or the server's own password).

use datafusion_postgres::pgwire;
use pgwire::messages::PgWireBackendMessage as Backend;
use pgwire::messages::startup::{Authentication, NegotiateProtocolVersion};

use super::Stopped;
use crate::api::Token;
use crate::engine::Session;
use crate::serve::frontend::{Message, PROTOCOL_3_0};
use crate::serve::reply::Failure;
use crate::serve::wire::{MAX_OPENING_BYTES, ReadError, Wire};
use crate::serve::{Auth, Shared};

/// Checks who the client is and opens its session.
pub(super) async fn login(
    shared: &Shared,
    wire: &mut Wire,
    version: i32,
    parameters: &[(String, String)],
) -> Result<Session, Stopped> {
    let address = wire.peer.ip();
    let parameter = |name: &str| parameters.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let options: Vec<String> =
        parameters.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.clone()).collect();
    if version != PROTOCOL_3_0 || !options.is_empty() {
        wire.send(Backend::NegotiateProtocolVersion(NegotiateProtocolVersion::new(0, options))).await?;
    }
    let user = parameter("user").unwrap_or_default().to_string();
    if user.is_empty() {
        return Err(Failure::fatal("28000", "no user name was given in the startup packet").into());
    }
    let database = parameter("database").filter(|d| !d.is_empty()).unwrap_or(&user);
    if database != shared.database {
        return Err(Failure::fatal(
            "3D000",
            format!("database \"{database}\" does not exist: connect to \"{}\"", shared.database),
        )
        .into());
    }
    if !wire.secure && !address.is_loopback() && !shared.insecure {
        return Err(Failure::fatal(
            "28000",
            "passwords are API tokens and are taken from other machines only over TLS: connect with sslmode=require",
        )
        .into());
    }
    if let Some(wait) = shared.logins.wait(address) {
        return Err(Failure::fatal(
            "28000",
            format!("too many failed logins from {address}: try again in {} s", wait.as_secs().max(1)),
        )
        .into());
    }
    wire.send(Backend::Authentication(Authentication::CleartextPassword)).await?;
    wire.flush().await?;
    let password = match wire.read(MAX_OPENING_BYTES).await {
        Ok(Message::Password(password)) => password,
        Ok(_) => return Err(Failure::fatal("08P01", "expected a password message").into()),
        Err(ReadError::Closed | ReadError::Io(_)) => return Err(Stopped::Gone),
        Err(e) => return Err(Failure::fatal("08P01", e.to_string()).into()),
    };
    let refused = |why: &str| {
        shared.logins.failed(address);
        Stopped::Failed(Failure::fatal("28P01", format!("password authentication failed for user \"{user}\"{why}")))
    };
    let (token, source) = match &shared.auth {
        Auth::Fixed { token, password: expected } => match same(&password, expected) {
            true => (token.clone(), "the server's API token"),
            false => return Err(refused("")),
        },
        Auth::TokenIsPassword { anonymous } => match Token::new(password) {
            Some(token) => (Some(token), "the connection's password"),
            None if *anonymous => (None, "the connection's password"),
            None => return Err(refused(": the password is a Linode API token")),
        },
    };
    let session = crate::serve::session(shared, token.clone(), source)
        .await
        .map_err(|e| Failure::fatal("XX000", e.to_string()))?;
    if let Some(token) = &token
        && !shared.tokens.trusted(token.fingerprint())
    {
        match session.token_accepted().await {
            Ok(true) => shared.tokens.accepted(token.fingerprint()),
            Ok(false) if matches!(shared.auth, Auth::Fixed { .. }) => {
                return Err(Failure::fatal(
                    "28000",
                    "the API refused this server's token: its operator must give it a valid one",
                )
                .into());
            }
            Ok(false) => return Err(refused(": the API refused the token")),
            Err(e) => return Err(Failure::fatal("08006", format!("the token cannot be checked: {e}")).into()),
        }
    }
    shared.logins.succeeded(address);
    Ok(session)
}

/// Whether two passwords are equal, compared in a time that depends on their lengths only.
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0
}
