//! Benchmark users: created as `trailmark user create` does, then logged in
//! over HTTP with their own password (which makes their signing key and
//! certificate).

use anyhow::Context as _;
use serde_json::{Value, json};
use trailmark::identity::service::NewUser;
use trailmark::instance::Instance;

/// Bench passwords: distinct per user and never containing the user ID.
pub fn initial_password_of(id: &str) -> String {
    format!("Bench-initial-{}-Pw1", hex::encode(id))
}

/// The password `id` chooses in place of the initial one.
pub fn own_password_of(id: &str) -> String {
    format!("Bench-own-{}-Pw2", hex::encode(id))
}

/// Creates users (ID, printed name, role) as `trailmark user create` does,
/// before the server starts.
pub async fn create_people(opened: &Instance, people: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    for (id, name, role) in people {
        opened
            .create_user(
                NewUser {
                    user_id: (*id).to_owned(),
                    printed_name: (*name).to_owned(),
                    email: format!("{id}@example.com"),
                    roles: vec![(*role).to_owned()],
                    identity_verified_by: Some("user:hr-officer".into()),
                    identity_verification_method: "passport checked in person".into(),
                    initial_password: Some(initial_password_of(id)),
                },
                "benchmark user",
            )
            .await?;
    }
    Ok(())
}

/// A user who changed the initial password (so holds a signing key and a
/// certificate) and has an open session.
pub struct Person {
    pub user_id: String,
    pub password: String,
    pub session: String,
    pub signed_once: bool,
}

/// POSTs `body` as JSON, with `bearer` when given; the status and the
/// response's JSON (`null` when it has none).
async fn post_json(
    http: &reqwest::Client,
    url: String,
    bearer: Option<&str>,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http.post(url).json(body);
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Logs `id` in and changes the initial password, which makes the signing
/// key and certificate.
pub async fn ready(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Person> {
    let (status, login) = post_json(
        http,
        format!("{base}/v1/sessions"),
        None,
        &json!({"user_id": id, "password": initial_password_of(id)}),
    )
    .await?;
    anyhow::ensure!(status == 201, "login of {id}: {status} {login}");
    let session = login["session"]
        .as_str()
        .context("the login returns a session")?
        .to_owned();
    let (status, changed) = post_json(
        http,
        format!("{base}/v1/account/password"),
        Some(&session),
        &json!({"current_password": initial_password_of(id), "new_password": own_password_of(id)}),
    )
    .await?;
    anyhow::ensure!(
        status == 200 && changed["account"]["certificate_sha256"].is_string(),
        "password change of {id}: {status} {changed}"
    );
    Ok(Person {
        user_id: id.to_owned(),
        password: own_password_of(id),
        session,
        signed_once: false,
    })
}
