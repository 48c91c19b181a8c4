//! How a one-time password reaches its owner and nobody else
//! (docs/SIGNATURES.md §4.2): an administrator never chooses or sees one.
//! Trailmark makes it and sends it to the person through the credential
//! channel (a webhook to the site's mail or identity system); only the
//! data-directory holder (`trailmark user create`, fixtures) may give one,
//! and hands it over in person. Each entry records which way it went.

use serde_json::json;

use super::{Identity, IdentityError, Result};
use crate::identity::password;
use crate::ledger::{Actor, UserId};
use crate::webhook;

/// Which way a one-time password went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Sent to the credential channel.
    Channel,
    /// Given by the data-directory holder, who hands it over.
    DataDirectoryHolder,
}

impl Route {
    /// As the entry records it.
    pub(super) fn recorded(self) -> &'static str {
        match self {
            Route::Channel => "sent to the person through the credential channel",
            Route::DataDirectoryHolder => "handed over by the data-directory holder",
        }
    }
}

/// Whom a one-time password is for.
pub(super) struct Recipient<'a> {
    pub(super) user_id: &'a UserId,
    pub(super) printed_name: &'a str,
    pub(super) email: &'a str,
}

impl Identity {
    /// The one-time password for `user_id` and its route: a `given` one only
    /// from a system actor (the CLI), otherwise a new one for the channel.
    ///
    /// # Errors
    /// A person giving a password, or no channel configured.
    pub(super) fn one_time_password(
        &self,
        by: &Actor,
        given: Option<String>,
        user_id: &UserId,
    ) -> Result<(String, Route)> {
        match given {
            Some(p) if by.as_str().starts_with("system:") => Ok((p, Route::DataDirectoryHolder)),
            Some(_) => Err(IdentityError::Forbidden(
                "an administrator does not choose another person's password: leave it out, and Trailmark sends a one-time password to the person through the credential channel".into(),
            )),
            None if self.config.credential_webhook_url.is_some() => Ok((
                password::one_time_password(user_id.as_str()),
                Route::Channel,
            )),
            None => Err(IdentityError::Conflict(
                "no credential channel is configured (identity.credential_webhook_url, the site's mail or identity system): a one-time password must reach only its owner; configure one, or create the user at the server with `trailmark user create`, which prints it to the data-directory holder".into(),
            )),
        }
    }

    /// Sends `password` to its owner when the route is the channel (before
    /// anything is recorded: a password that did not go out changes
    /// nothing).
    ///
    /// # Errors
    /// The channel refused or did not answer.
    pub(super) async fn hand_over(
        &self,
        route: Route,
        to: &Recipient<'_>,
        password: &str,
        cause: &str,
    ) -> Result<()> {
        let (Route::Channel, Some(url)) = (route, &self.config.credential_webhook_url) else {
            return Ok(());
        };
        let Some(secret) = &self.credential_secret else {
            return Err(IdentityError::Conflict(
                "the credential channel has no signing secret (identity.credential_webhook_secret_file); nothing was changed".into(),
            ));
        };
        let body = json!({"type": "trailmark.credential.one_time_password", "cause": cause,
                          "user_id": to.user_id, "printed_name": to.printed_name, "email": to.email,
                          "one_time_password": password,
                          "note": "valid for one log-in, which must change it"})
        .to_string();
        // Standard Webhooks, as the hand-overs: the site's system takes a
        // password only from Trailmark.
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS provides randomness");
        let id = format!("cred_{}", hex::encode(nonce));
        // Freshness on the wire is the system clock's, as for hand-overs.
        let timestamp = chrono::Utc::now().timestamp();
        let signature = webhook::signature(secret, &id, timestamp, body.as_bytes());
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(webhook::ID, id.as_str())
            .header(webhook::TIMESTAMP, timestamp.to_string())
            .header(webhook::SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match sent {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e
                    .status()
                    .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
                // The error names the status, never the body.
                tracing::error!(error = %e.without_url(), user_id = %to.user_id, "the credential channel did not take a one-time password");
                Err(IdentityError::Conflict(format!(
                    "the credential channel did not take the one-time password ({status}); nothing was changed: retry when it answers"
                )))
            }
        }
    }
}
