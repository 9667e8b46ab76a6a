//! The people of a party: accounts with roles, desks and a clearance in the party's own
//! scale; passwords (argon2id); sign-in sessions with CSRF secrets; per-user API tokens;
//! sign-in throttling; and the authorisation checks that every API and console action
//! goes through, so the console and the API cannot disagree about who may do what.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use liaison_core::audit::AuditEvent;
use liaison_core::ids::DeskId;
use liaison_core::label::Label;
use liaison_core::release::AgreementSet;
use liaison_store::{SessionRow, Store, StoreError, TokenRow, UserRow};
use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::random::Random;

/// Sign-in failures allowed per account and per client address inside
/// `THROTTLE_WINDOW_MS` before further attempts wait.
pub const LOGIN_FAILURES_MAX: u32 = 5;
pub const THROTTLE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// First lockout after too many failures; each further failure doubles it.
pub const LOCKOUT_MS_MIN: i64 = 60 * 1000;
pub const LOCKOUT_MS_MAX: i64 = 15 * 60 * 1000;
/// Throttle entries kept; the oldest are forgotten first.
pub const THROTTLE_ENTRIES_MAX: usize = 10_000;
pub const PASSWORD_CHARS_MIN: usize = 10;
pub const PASSWORD_BYTES_MAX: usize = 1024;
pub const NAME_BYTES_MAX: usize = 64;
/// Name of the cookie holding the session secret.
pub const SESSION_COOKIE: &str = "liaison_session";
/// The node owner's credential for the CLI, in the node's directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Staffs desks: reads, sends and acknowledges for them.
    DutyOfficer,
    /// May grant a third party's release of the party's information.
    ReleaseOfficer,
    /// Records notices, conditions and signatures of agreements.
    AgreementOfficer,
    /// Manages accounts; sees the audit log.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::DutyOfficer,
        Role::ReleaseOfficer,
        Role::AgreementOfficer,
        Role::Administrator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DutyOfficer => "duty-officer",
            Self::ReleaseOfficer => "release-officer",
            Self::AgreementOfficer => "agreement-officer",
            Self::Administrator => "administrator",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UserError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UserError::Invalid {
                field: "roles",
                message: format!(
                    "`{s}` is not a role, expected one of duty-officer, release-officer, agreement-officer, administrator"
                ),
            })
    }
}

/// Languages the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    #[default]
    En,
    Ko,
    ZhHans,
    Ja,
}

impl Language {
    pub const ALL: [Language; 4] = [Language::En, Language::Ko, Language::ZhHans, Language::Ja];

    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Ko => "ko",
            Self::ZhHans => "zh-CN",
            Self::Ja => "ja",
        }
    }

    /// The language's own name for itself, for language menus.
    pub fn endonym(self) -> &'static str {
        match self {
            Self::En => "English",
            Self::Ko => "한국어",
            Self::ZhHans => "简体中文",
            Self::Ja => "日本語",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UserError> {
        match s.to_ascii_lowercase().as_str() {
            "en" => Ok(Self::En),
            "ko" => Ok(Self::Ko),
            "zh" | "zh-cn" | "zh-hans" => Ok(Self::ZhHans),
            "ja" => Ok(Self::Ja),
            _ => Err(UserError::Invalid {
                field: "language",
                message: format!("`{s}` is not a console language, expected en, ko, zh-CN or ja"),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no user `{0}`")]
    NotFound(String),
    #[error("user `{0}` already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Which desks a principal may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desks {
    /// The node's operator: every desk of the party.
    All,
    Only(Vec<String>),
}

/// Highest level a principal may see or send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clearance {
    /// The node's operator, who holds the party key anyway.
    Unlimited,
    /// A level in the party's own scale.
    Level(String),
}

/// How a request proved who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Session { csrf: String, id_hash: String },
    Token,
    Operator,
}

/// Whoever is making a request, after authentication.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub desks: Desks,
    pub clearance: Clearance,
    pub language: Language,
    pub time_zone: jiff::tz::TimeZone,
    pub time_zone_name: String,
    pub via: Via,
}

/// Why an authenticated principal may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("`{desk}` is not one of your desks")]
    NotYourDesk { desk: String },
    #[error("`{label}` is above your clearance `{clearance}`")]
    AboveClearance { label: String, clearance: String },
    #[error("`{label}` cannot be placed on this party's scale, so it is not shown")]
    UnknownLevel { label: String },
    #[error("this needs the {0} role")]
    NeedsRole(&'static str),
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        matches!(self.via, Via::Operator) || self.roles.contains(&role)
    }

    pub fn require(&self, role: Role) -> Result<(), Denied> {
        if self.has(role) {
            Ok(())
        } else {
            Err(Denied::NeedsRole(role.as_str()))
        }
    }

    /// Desks this principal acts for, among those the agreements know for `party`.
    pub fn desk_list(&self, set: &AgreementSet, party: &str) -> Vec<String> {
        let mut all = set.party_desks(party);
        all.retain(|d| self.may_use_desk(d).is_ok());
        all
    }

    pub fn may_use_desk(&self, desk: &str) -> Result<(), Denied> {
        match &self.desks {
            Desks::All => Ok(()),
            Desks::Only(d) if d.iter().any(|x| x == desk) => Ok(()),
            Desks::Only(_) => Err(Denied::NotYourDesk {
                desk: desk.to_owned(),
            }),
        }
    }

    /// Whether a message with `label` may be shown to or sent by this principal.
    /// Fails closed: a level the agreements cannot place is refused.
    pub fn cleared_for(&self, set: &AgreementSet, label: &str) -> Result<(), Denied> {
        let Clearance::Level(clearance) = &self.clearance else {
            return Ok(());
        };
        let unknown = || Denied::UnknownLevel {
            label: label.to_owned(),
        };
        let parsed: Label = label.parse().map_err(|_| unknown())?;
        let (_, message_rank) = set.level_ranks(&parsed).ok_or_else(unknown)?;
        let own = match &parsed.scheme {
            liaison_core::label::Scheme::Party(p) => Label::party(p, clearance),
            liaison_core::label::Scheme::Common => {
                // A common label is compared with the clearance's place on the scale of
                // any party the clearance belongs to; the node's own party is the one.
                return Err(unknown());
            }
        };
        let Some((clearance_rank, _)) = set.level_ranks(&own) else {
            return Err(Denied::AboveClearance {
                label: label.to_owned(),
                clearance: clearance.clone(),
            });
        };
        if message_rank <= clearance_rank {
            Ok(())
        } else {
            Err(Denied::AboveClearance {
                label: label.to_owned(),
                clearance: clearance.clone(),
            })
        }
    }
}

/// A throttle counter for one key (account name or client address).
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_ms: i64,
    locked_until_ms: i64,
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_ms: 30 * 60 * 1000,
            absolute_ms: 12 * 60 * 60 * 1000,
        }
    }
}

/// Why a sign-in failed. Wrong name and wrong password are deliberately one answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("wrong name or password")]
    Wrong,
    #[error("too many failed sign-ins; try again in {retry_after_s} s")]
    Throttled { retry_after_s: i64 },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Sessions, tokens and throttling for one node. Uses wall-clock time (not the
/// scenario clock a node may run on), so a demo at ×40 does not expire sessions.
#[derive(Debug)]
pub struct People {
    pub wall: SharedClock,
    random: Arc<dyn Random>,
    pub policy: SessionPolicy,
    operator_token_hash: Option<String>,
    throttle: Mutex<HashMap<String, Failures>>,
    dummy: std::sync::OnceLock<String>,
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares secrets' digests in time independent of where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl People {
    pub fn new(
        wall: SharedClock,
        random: Arc<dyn Random>,
        policy: SessionPolicy,
        operator_token: Option<&str>,
    ) -> Self {
        Self {
            wall,
            random,
            policy,
            operator_token_hash: operator_token.map(sha256_hex),
            throttle: Mutex::new(HashMap::new()),
            dummy: std::sync::OnceLock::new(),
        }
    }

    /// An audit entry stamped with wall-clock time: account changes happen in the
    /// real world even when the node runs on a scenario clock.
    pub fn audit(&self, event: AuditEvent) -> Vec<u8> {
        liaison_core::audit::AuditEntry {
            at: self.wall.now(),
            event,
        }
        .encode()
    }

    pub fn secret(&self) -> String {
        let mut b = [0u8; 32];
        self.random.fill(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    }

    pub fn hash_password(&self, password: &str) -> Result<String, UserError> {
        check_password(password)?;
        let mut salt = [0u8; 16];
        self.random.fill(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| UserError::Hash(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| UserError::Hash(e.to_string()))
    }

    /// A real hash of a random password, so that a sign-in with an unknown name costs
    /// as much as one with a wrong password.
    fn dummy_hash(&self) -> String {
        self.dummy
            .get_or_init(|| self.hash_password(&self.secret()).unwrap_or_default())
            .clone()
    }

    fn throttled(&self, keys: &[String], now_ms: i64) -> Option<i64> {
        let t = self.throttle.lock().ok()?;
        keys.iter()
            .filter_map(|k| t.get(k))
            .map(|f| f.locked_until_ms - now_ms)
            .filter(|left| *left > 0)
            .max()
    }

    fn record_failure(&self, keys: &[String], now_ms: i64) {
        let Ok(mut t) = self.throttle.lock() else {
            return;
        };
        if t.len() >= THROTTLE_ENTRIES_MAX {
            t.retain(|_, f| now_ms - f.first_ms < THROTTLE_WINDOW_MS);
            if t.len() >= THROTTLE_ENTRIES_MAX {
                t.clear();
            }
        }
        for k in keys {
            let f = t.entry(k.clone()).or_insert(Failures {
                count: 0,
                first_ms: now_ms,
                locked_until_ms: 0,
            });
            if now_ms - f.first_ms >= THROTTLE_WINDOW_MS && f.locked_until_ms <= now_ms {
                *f = Failures {
                    count: 0,
                    first_ms: now_ms,
                    locked_until_ms: 0,
                };
            }
            f.count += 1;
            if f.count >= LOGIN_FAILURES_MAX {
                let doublings = (f.count - LOGIN_FAILURES_MAX).min(10);
                let lock = (LOCKOUT_MS_MIN << doublings).min(LOCKOUT_MS_MAX);
                f.locked_until_ms = now_ms + lock;
            }
        }
    }

    fn forget_failures(&self, key: &str) {
        if let Ok(mut t) = self.throttle.lock() {
            t.remove(key);
        }
    }

    /// Checks a name and password and opens a session. Returns the session secret
    /// (for the cookie) and the principal.
    pub async fn login<S: Store>(
        &self,
        store: &S,
        name: &str,
        password: &str,
        client: &str,
    ) -> Result<(String, Principal), LoginError> {
        let now = self.wall.now_ms();
        let keys = [format!("user:{}", name.trim()), format!("addr:{client}")];
        if let Some(left) = self.throttled(&keys, now) {
            return Err(LoginError::Throttled {
                retry_after_s: (left + 999) / 1000,
            });
        }
        let row = store
            .user_get(name.trim())
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        // Hash even for unknown names so timing does not reveal which names exist.
        let hash = match &row {
            Some(r) => r.password_hash.clone(),
            None => self.dummy_hash(),
        };
        let pw = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .unwrap_or(false);
        let Some(row) = row.filter(|r| ok && !r.disabled) else {
            self.record_failure(&keys, now);
            return Err(LoginError::Wrong);
        };
        self.forget_failures(&keys[0]);
        let secret = self.secret();
        let session = SessionRow {
            id_hash: sha256_hex(&secret),
            user_name: row.name.clone(),
            csrf: self.secret(),
            created_ms: now,
            last_seen_ms: now,
        };
        store
            .session_put(&session)
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        let p = principal_of(
            &row,
            Via::Session {
                csrf: session.csrf,
                id_hash: session.id_hash,
            },
        );
        Ok((secret, p))
    }

    /// Who holds `secret` as a session cookie, if the session is live. A live session
    /// is touched so idle time restarts.
    pub async fn session<S: Store>(
        &self,
        store: &S,
        secret: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let id_hash = sha256_hex(secret);
        let Some(mut s) = store.session_get(&id_hash).await? else {
            return Ok(None);
        };
        let now = self.wall.now_ms();
        if now - s.last_seen_ms > self.policy.idle_ms
            || now - s.created_ms > self.policy.absolute_ms
        {
            store.session_delete(Some(&id_hash), &s.user_name).await?;
            return Ok(None);
        }
        let Some(user) = store.user_get(&s.user_name).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        // Touch at most once a minute: a page load makes several requests.
        if now - s.last_seen_ms > 60_000 {
            s.last_seen_ms = now;
            store.session_put(&s).await?;
        }
        Ok(Some(principal_of(
            &user,
            Via::Session {
                csrf: s.csrf,
                id_hash: s.id_hash,
            },
        )))
    }

    /// Who holds `secret` as a bearer token: the operator, or a user's API token.
    pub async fn bearer<S: Store>(
        &self,
        store: &S,
        party: &str,
        secret: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let hash = sha256_hex(secret);
        if self
            .operator_token_hash
            .as_deref()
            .is_some_and(|h| same(h, &hash))
        {
            return Ok(Some(operator(party)));
        }
        let Some(t) = store.token_get(&hash).await? else {
            return Ok(None);
        };
        let Some(user) = store.user_get(&t.user_name).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        Ok(Some(principal_of(&user, Via::Token)))
    }

    pub async fn logout<S: Store>(&self, store: &S, p: &Principal) -> Result<(), StoreError> {
        if let Via::Session { id_hash, .. } = &p.via {
            store.session_delete(Some(id_hash), &p.name).await?;
        }
        Ok(())
    }
}

fn operator(party: &str) -> Principal {
    Principal {
        name: "operator".into(),
        display_name: format!("{party} node operator"),
        roles: Role::ALL.to_vec(),
        desks: Desks::All,
        clearance: Clearance::Unlimited,
        language: Language::En,
        time_zone: jiff::tz::TimeZone::UTC,
        time_zone_name: "UTC".into(),
        via: Via::Operator,
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

pub fn principal_of(row: &UserRow, via: Via) -> Principal {
    Principal {
        name: row.name.clone(),
        display_name: row.display_name.clone(),
        roles: split_list(&row.roles)
            .filter_map(|r| Role::parse(r).ok())
            .collect(),
        desks: Desks::Only(split_list(&row.desks).map(str::to_owned).collect()),
        clearance: Clearance::Level(row.clearance.clone()),
        language: Language::parse(&row.language).unwrap_or_default(),
        time_zone: jiff::tz::TimeZone::get(&row.time_zone).unwrap_or(jiff::tz::TimeZone::UTC),
        time_zone_name: row.time_zone.clone(),
        via,
    }
}

/// Whether `password` matches a stored PHC string (its own parameters apply).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(UserError::Invalid {
            field: "password",
            message: format!(
                "expected {PASSWORD_CHARS_MIN} to {PASSWORD_BYTES_MAX} bytes; a passphrase of several words is best"
            ),
        });
    }
    Ok(())
}

/// What an administrator asks for when creating or changing an account.
#[derive(Debug, Clone, Default)]
pub struct UserSpec {
    pub name: String,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub desks: Vec<String>,
    pub clearance: String,
    pub language: String,
    pub time_zone: String,
}

/// Checks an account against the node's agreements: desks of this party that the
/// agreements declare, a clearance in the party's own scale, a known language and zone.
pub fn check_spec(spec: &UserSpec, party: &str, set: &AgreementSet) -> Result<(), UserError> {
    let name = spec.name.trim();
    if name.is_empty()
        || name.len() > NAME_BYTES_MAX
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
    {
        return Err(UserError::Invalid {
            field: "name",
            message: format!(
                "`{name}` is not a user name, expected 1 to {NAME_BYTES_MAX} letters, digits, `.`, `-`, `_` or `@`"
            ),
        });
    }
    for r in &spec.roles {
        Role::parse(r)?;
    }
    for d in &spec.desks {
        let desk = DeskId::new(d).map_err(|e| UserError::Invalid {
            field: "desks",
            message: e.to_string(),
        })?;
        if desk.party().as_str() != party || !set.knows_desk(desk.as_str()) {
            return Err(UserError::Invalid {
                field: "desks",
                message: format!("`{d}` is not a desk of {party} in any installed agreement"),
            });
        }
    }
    let levels = set.party_levels(party);
    if !levels.iter().any(|(l, _)| *l == spec.clearance) {
        return Err(UserError::Invalid {
            field: "clearance",
            message: format!(
                "`{}` is not a level of {party}'s own scale, expected one of: {}",
                spec.clearance,
                levels
                    .iter()
                    .map(|(l, _)| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Language::parse(&spec.language)?;
    jiff::tz::TimeZone::get(&spec.time_zone).map_err(|_| UserError::Invalid {
        field: "time_zone",
        message: format!(
            "`{}` is not a time zone, expected an IANA name such as `Asia/Seoul`",
            spec.time_zone
        ),
    })?;
    Ok(())
}

/// Creates an account (audited). `by` names who did it.
pub async fn add_user<S: Store>(
    store: &S,
    party: &str,
    set: &AgreementSet,
    people: &People,
    spec: &UserSpec,
    password: &str,
    by: &str,
) -> Result<(), UserError> {
    check_spec(spec, party, set)?;
    let hash = people.hash_password(password)?;
    let now = people.wall.now_ms();
    let row = UserRow {
        name: spec.name.trim().to_owned(),
        display_name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| spec.name.trim().to_owned()),
        password_hash: hash,
        roles: spec.roles.join(","),
        desks: spec.desks.join(","),
        clearance: spec.clearance.clone(),
        language: Language::parse(&spec.language)?.code().to_owned(),
        time_zone: spec.time_zone.clone(),
        disabled: false,
        created_ms: now,
        updated_ms: now,
    };
    let audit = people.audit(AuditEvent::AccountChanged {
        name: row.name.clone(),
        by: by.to_owned(),
        change: format!(
            "created: roles {}; desks {}; clearance {}",
            row.roles, row.desks, row.clearance
        ),
    });
    if store.user_put(&row, true, &[audit]).await? {
        Ok(())
    } else {
        Err(UserError::Exists(row.name))
    }
}

/// Changes an account: a new password, or disabling it. Either ends its sessions.
pub async fn change_user<S: Store>(
    store: &S,
    people: &People,
    name: &str,
    password: Option<&str>,
    disable: bool,
    by: &str,
) -> Result<(), UserError> {
    let Some(mut row) = store.user_get(name).await? else {
        return Err(UserError::NotFound(name.to_owned()));
    };
    let mut what = Vec::new();
    if let Some(pw) = password {
        row.password_hash = people.hash_password(pw)?;
        what.push("password changed");
    }
    if disable {
        row.disabled = true;
        what.push("disabled");
    }
    row.updated_ms = people.wall.now_ms();
    let audit = people.audit(AuditEvent::AccountChanged {
        name: row.name.clone(),
        by: by.to_owned(),
        change: what.join("; "),
    });
    if !store.user_put(&row, false, &[audit]).await? {
        return Err(UserError::NotFound(name.to_owned()));
    }
    store.session_delete(None, name).await?;
    Ok(())
}

/// Issues an API token for `name`; returns the secret (shown once).
pub async fn issue_token<S: Store>(
    store: &S,
    people: &People,
    name: &str,
    label: &str,
) -> Result<String, UserError> {
    if store.user_get(name).await?.is_none() {
        return Err(UserError::NotFound(name.to_owned()));
    }
    let secret = format!("lt_{}", people.secret());
    store
        .token_put(&TokenRow {
            id_hash: sha256_hex(&secret),
            user_name: name.to_owned(),
            label: label.to_owned(),
            created_ms: people.wall.now_ms(),
        })
        .await?;
    Ok(secret)
}

/// Reads the node's operator token, creating it (readable by the owner only) if absent.
pub fn operator_token(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(OPERATOR_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = format!("lo_{}", URL_SAFE_NO_PAD.encode(b));
    crate::write_private(&path, &token).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::random::SeededRandom;

    fn people(clock: Arc<ManualClock>) -> People {
        People::new(
            clock,
            Arc::new(SeededRandom::new(7)),
            SessionPolicy::default(),
            None,
        )
    }

    #[test]
    fn throttle_locks_after_repeated_failures_and_doubles() {
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH));
        let p = people(clock);
        let keys = ["user:a".to_owned(), "addr:x".to_owned()];
        for _ in 0..LOGIN_FAILURES_MAX - 1 {
            p.record_failure(&keys, 0);
        }
        assert_eq!(p.throttled(&keys, 0), None);
        p.record_failure(&keys, 0);
        assert_eq!(p.throttled(&keys, 0), Some(LOCKOUT_MS_MIN));
        p.record_failure(&keys, 1);
        assert_eq!(p.throttled(&keys, 1), Some(2 * LOCKOUT_MS_MIN));
        assert_eq!(p.throttled(&keys, 1 + 2 * LOCKOUT_MS_MIN), None);
        p.forget_failures("user:a");
        assert_eq!(p.throttled(&["user:a".to_owned()], 2), None);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let p = people(Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH)));
        let h = p.hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(p.hash_password("short").is_err());
    }

    #[test]
    fn secrets_compare_only_when_equal() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
