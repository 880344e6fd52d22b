//! Operators at work: their codes checked, their failures counted and locked, their enrollment, backup
//! codes and passwords; and the changes an admin makes (from the command line or `/admin`).
//!
//! The rules that change `operators.json` are functions of [`Operators`], so that the command line (which
//! edits the file under its lock, see `store::file::operators`) and the running server (through its
//! [`OperatorStore`]) apply the very same ones. A change that spends something (a code's step, a backup
//! code, an enrollment token) is written durably before it is answered.
//!
//! Answers never tell which names exist: an unknown name is checked against decoys with the same work,
//! and locks the same way after the same number of failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::auth::hashing::{self, Hasher};
use crate::auth::token::{generate_token, sha256_hex};
use crate::auth::totp::{TotpCode, Verdict, Verifier};
use crate::config::{AuthSettings, RegulationSettings, TotpSettings};
use crate::model::operator::{BackupCodes, Enrollment, Method, Operator, OperatorName, Operators, Role};
use crate::model::secret::{decode_secret, generate_secret};
use crate::model::time::{format_time, later};
use crate::store::{OperatorStore, StoreError};

/// Backup codes given at enrollment and at each regeneration.
pub const BACKUP_CODES: usize = 10;
/// Wrong codes on an enrollment page that revoke its link.
pub const ENROLLMENT_TRIES: u32 = 5;
/// The shortest password.
pub const MIN_PASSWORD: usize = 12;
/// Codes mailed to one operator within [`EMAIL_WINDOW`], at most.
pub const EMAIL_SENDS: usize = 3;
/// The window of [`EMAIL_SENDS`].
pub const EMAIL_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Requests for a code by mail handled at once; the answer does not wait for them.
const EMAIL_REQUESTS: usize = 4;
/// Backup codes left at which the operator is told by mail.
pub const BACKUP_CODES_LOW: usize = 2;
/// Unknown names whose failures are tracked at once; beyond it the oldest are forgotten.
const MAX_UNKNOWN: usize = 10_000;
/// A backup code's characters: Crockford's base32 (no i, l, o, u), 5 bits each; 12 of them: 60 bits.
const BACKUP_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BACKUP_LEN: usize = 12;

/// One operator as an admin sees them (`/admin`, `/api/admin/operators`, `authrun operator list`).
#[derive(Debug, serde::Serialize)]
pub struct OperatorRow {
    pub name: String,
    pub role: &'static str,
    pub email: Option<String>,
    pub enrolled: bool,
    pub backup_codes_left: usize,
    pub last_sign_in: Option<String>,
    pub last_run: Option<String>,
    pub failures: u32,
    pub locked_until: Option<String>,
}

impl OperatorRow {
    pub fn new(name: &OperatorName, operator: &Operator, now: time::OffsetDateTime) -> Self {
        Self {
            name: name.to_string(),
            role: operator.role.as_str(),
            email: operator.email.clone(),
            enrolled: operator.is_enrolled(),
            backup_codes_left: operator.backup_codes.hashes.len(),
            last_sign_in: operator.last_sign_in.map(format_time),
            last_run: operator.last_run.map(format_time),
            failures: operator.failures,
            locked_until: operator.locked_at(now).map(format_time),
        }
    }
}

/// What a change by an admin could not do.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("there is no operator {0}")]
    Unknown(String),
    #[error("an operator {0} exists already")]
    Exists(String),
    #[error("{0} is not an operator name: use 1 to 32 of a-z, 0-9, '.', '_' and '-'")]
    BadName(String),
    #[error("{0} is the last admin: make another operator admin first")]
    LastAdmin(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds `name`, not yet enrolled, and returns the token of its enrollment link.
pub fn add(
    operators: &mut Operators,
    name: &str,
    role: Role,
    email: Option<String>,
    now: OffsetDateTime,
    valid_for: Duration,
) -> Result<String, AdminError> {
    let name = OperatorName::parse(name).ok_or_else(|| AdminError::BadName(name.to_string()))?;
    if operators.operators.contains_key(&name) {
        return Err(AdminError::Exists(name.to_string()));
    }
    let mut operator = Operator::new(role, email, now);
    let token = begin_enrollment(&mut operator, now, valid_for);
    operators.operators.insert(name, operator);
    Ok(token)
}

/// A new enrollment link for `name`; its secret, backup codes and password are revoked at once.
pub fn reset(
    operators: &mut Operators,
    name: &str,
    now: OffsetDateTime,
    valid_for: Duration,
) -> Result<String, AdminError> {
    let operator = find_mut(operators, name)?;
    operator.secret = None;
    operator.last_step = None;
    operator.backup_codes = BackupCodes::default();
    operator.password = None;
    operator.email_code = None;
    operator.enrolled = None;
    Ok(begin_enrollment(operator, now, valid_for))
}

/// Lifts `name`'s lock and forgets its failures.
pub fn unlock(operators: &mut Operators, name: &str) -> Result<(), AdminError> {
    let operator = find_mut(operators, name)?;
    operator.locked_until = None;
    operator.failures = 0;
    Ok(())
}

/// Removes `name`; the last admin stays.
pub fn remove(operators: &mut Operators, name: &str) -> Result<(), AdminError> {
    ensure_not_last_admin(operators, name)?;
    let key = OperatorName::parse(name).ok_or_else(|| AdminError::Unknown(name.to_string()))?;
    operators
        .operators
        .remove(&key)
        .map(|_| ())
        .ok_or_else(|| AdminError::Unknown(name.to_string()))
}

/// Gives `name` the role `role`; the last admin stays admin.
pub fn set_role(operators: &mut Operators, name: &str, role: Role) -> Result<(), AdminError> {
    if role != Role::Admin {
        ensure_not_last_admin(operators, name)?;
    }
    find_mut(operators, name)?.role = role;
    Ok(())
}

fn ensure_not_last_admin(operators: &Operators, name: &str) -> Result<(), AdminError> {
    let admins: Vec<&OperatorName> = operators
        .operators
        .iter()
        .filter(|(_, operator)| operator.role == Role::Admin)
        .map(|(name, _)| name)
        .collect();
    match admins.as_slice() {
        [only] if only.as_str() == name => Err(AdminError::LastAdmin(name.to_string())),
        _ => Ok(()),
    }
}

fn find_mut<'a>(operators: &'a mut Operators, name: &str) -> Result<&'a mut Operator, AdminError> {
    OperatorName::parse(name)
        .and_then(|key| operators.operators.get_mut(&key))
        .ok_or_else(|| AdminError::Unknown(name.to_string()))
}

/// Gives `operator` a new pending enrollment (a new secret, fixed for the token) and returns the token.
fn begin_enrollment(operator: &mut Operator, now: OffsetDateTime, valid_for: Duration) -> String {
    let token = generate_token();
    operator.enrollment = Some(Enrollment {
        token_sha256: sha256_hex(&token),
        secret: generate_secret(),
        expires: later(now, valid_for),
        wrong: 0,
    });
    token
}

/// The enrollment link for `token`: `<base>/enroll/<token>`.
pub fn enrollment_link(base: &str, token: &str) -> String {
    format!("{}/enroll/{token}", base.trim_end_matches('/'))
}

/// A new set of backup codes, as shown to the person (`k7dq-m3xz-9tpw`).
pub fn new_backup_codes() -> Vec<String> {
    (0..BACKUP_CODES)
        .map(|_| {
            let chars: Vec<char> = (0..BACKUP_LEN)
                .map(|_| char::from(BACKUP_ALPHABET[usize::from(rand::random::<u8>() % 32)]))
                .collect();
            chars
                .chunks(4)
                .map(|chunk| chunk.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// A backup code as typed (any case, dashes, spaces, `i`/`l` for 1, `o` for 0), as it is hashed; `None`
/// when it cannot be one.
fn normalized_backup_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            other => other,
        })
        .collect();
    (code.len() == BACKUP_LEN && code.bytes().all(|b| BACKUP_ALPHABET.contains(&b))).then_some(code)
}

/// What a person sent to prove themselves.
pub struct Credentials {
    pub user: String,
    pub code: String,
    pub password: Option<String>,
    /// The user is the operator a session signed in as (with the password): only the code is asked.
    pub signed_in: bool,
}

/// A person proven by a factor. Nothing is spent until [`Directory::commit`].
#[derive(Debug, Clone)]
pub struct Proof {
    pub name: OperatorName,
    pub role: Role,
    pub method: Method,
    /// The TOTP step the code belongs to.
    step: Option<u64>,
    /// The hash of the backup code, or of the code by mail, used.
    backup: Option<String>,
}

impl Proof {
    /// The TOTP step of the code, when it was a TOTP code.
    pub fn step(&self) -> Option<u64> {
        self.step
    }
}

/// Why credentials were refused. Unknown names are [`Failure::Wrong`], like a wrong code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The code is neither a TOTP code nor a backup code in form.
    Malformed,
    Wrong,
    Replayed,
}

/// What an enrollment could not do.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Unknown, used or expired token.
    #[error("this enrollment link is unknown, used or expired")]
    NotFound,
    #[error("wrong code")]
    WrongCode { tries_left: u32 },
    #[error("the password is too short: at least {MIN_PASSWORD} characters")]
    WeakPassword,
    #[error("a password is required")]
    MissingPassword,
    #[error("{0}")]
    Hash(#[from] hashing::HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A pending enrollment, as its page shows it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub name: OperatorName,
    /// The secret to scan (base32).
    pub secret: String,
    pub expires: OffsetDateTime,
}

/// Sends a message to an operator's address (`to`, subject, body) off the request's path; false when it
/// could not be queued. Provided by the notifier.
pub type MailHook = Arc<dyn Fn(&str, &str, String) -> bool + Send + Sync>;

/// What became of a request for a code by mail. The answer to the request is the same whatever this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailCodeOutcome {
    Sent,
    /// The name is unknown, not enrolled, or has no address.
    NoAddress,
    /// [`EMAIL_SENDS`] codes were mailed within [`EMAIL_WINDOW`].
    Limited,
    /// No mail could be queued, or the operators file could not be written.
    Failed,
}

impl EmailCodeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "email_code_sent",
            Self::NoAddress => "email_code_no_address",
            Self::Limited => "email_code_limited",
            Self::Failed => "email_code_failed",
        }
    }
}

fn email_code_hash(name: &OperatorName, code: &str) -> String {
    sha256_hex(&format!("{name}:{code}"))
}

/// The operators of a running server.
pub struct Directory {
    store: Arc<dyn OperatorStore>,
    totp: TotpSettings,
    auth: AuthSettings,
    max_failures: u32,
    lock: Duration,
    pub hasher: Hasher,
    /// Failures and locks of names that are not operators, so they lock like real ones.
    unknown: Mutex<HashMap<String, (u32, Option<OffsetDateTime>)>>,
    /// Checked against when a name is unknown.
    decoy: Verifier,
    /// Mails operators (codes, low backup codes, locks); none without `[mail]`.
    mail: Option<MailHook>,
    /// Requests for a code by mail being handled; more at once are dropped (each writes the file).
    pub email_requests: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("auth", &self.auth)
            .field("mail", &self.mail.is_some())
            .finish_non_exhaustive()
    }
}

impl Directory {
    pub fn new(
        store: Arc<dyn OperatorStore>,
        totp: TotpSettings,
        auth: AuthSettings,
        regulation: &RegulationSettings,
    ) -> Self {
        let decoy = Verifier::new(rand::random::<[u8; 20]>().to_vec(), totp.clone());
        Self {
            store,
            totp,
            auth,
            max_failures: regulation.user_max_failures,
            lock: regulation.user_lock,
            hasher: Hasher::default(),
            unknown: Mutex::new(HashMap::new()),
            decoy,
            mail: None,
            email_requests: Arc::new(tokio::sync::Semaphore::new(EMAIL_REQUESTS)),
        }
    }

    /// The directory, mailing operators through `mail`.
    pub fn with_mail(mut self, mail: MailHook) -> Self {
        self.mail = Some(mail);
        self
    }

    /// Mails `name` (if they have an address and mail is set up); false when nothing was queued.
    fn mail_to(&self, name: &OperatorName, subject: &str, body: String) -> bool {
        let (Some(mail), Some(to)) = (&self.mail, self.get(name.as_str()).and_then(|op| op.email)) else {
            return false;
        };
        mail(&to, subject, body)
    }

    /// Mails a new code to `user` when codes by mail are on, the operator is enrolled and has an
    /// address, and fewer than [`EMAIL_SENDS`] went within [`EMAIL_WINDOW`]. The code is stored hashed,
    /// valid `[auth] email_code_seconds`, and replaces any earlier one.
    pub async fn email_code(&self, user: &str, now: OffsetDateTime) -> EmailCodeOutcome {
        let Some(name) = OperatorName::parse(user) else {
            return EmailCodeOutcome::NoAddress;
        };
        let Some(to) = self
            .get(name.as_str())
            .filter(|operator| operator.is_enrolled())
            .and_then(|operator| operator.email)
        else {
            return EmailCodeOutcome::NoAddress;
        };
        let digits = usize::from(self.totp.digits);
        let code: String = (0..digits)
            .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
            .collect();
        let hash = email_code_hash(&name, &code);
        let expires = later(now, self.auth.email_code);
        let mut outcome = EmailCodeOutcome::NoAddress;
        let stored = self
            .store
            .transact(&mut |operators| {
                let Some(operator) = operators.operators.get_mut(&name) else {
                    return false;
                };
                operator
                    .email_sends
                    .retain(|sent| later(sent.0, EMAIL_WINDOW) > now);
                if operator.email_sends.len() >= EMAIL_SENDS {
                    outcome = EmailCodeOutcome::Limited;
                    return false;
                }
                operator.email_sends.push(crate::model::regulation::Stamp(now));
                operator.email_code = Some(crate::model::operator::EmailCode {
                    hash: hash.clone(),
                    expires,
                });
                outcome = EmailCodeOutcome::Sent;
                true
            })
            .await;
        if let Err(error) = stored {
            tracing::error!(%error, "a code by mail could not be stored; none was sent");
            return EmailCodeOutcome::Failed;
        }
        if outcome != EmailCodeOutcome::Sent {
            return outcome;
        }
        let minutes = self.auth.email_code.as_secs().div_ceil(60);
        let body = format!(
            "Your authrun code: {code}\n\nIt works once, within {minutes} minutes. If you did not ask for it, \
             someone knows your name on authrun: tell an admin.\n"
        );
        let queued = self
            .mail
            .as_ref()
            .is_some_and(|mail| mail(&to, "Your authrun code", body));
        if queued {
            EmailCodeOutcome::Sent
        } else {
            EmailCodeOutcome::Failed
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.auth
    }

    /// Every operator, by name.
    pub fn list(&self) -> Vec<(OperatorName, Operator)> {
        let mut list = Vec::new();
        self.store.read(&mut |operators| {
            list = operators
                .operators
                .iter()
                .map(|(name, operator)| (name.clone(), operator.clone()))
                .collect();
        });
        list
    }

    /// The operator `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Operator> {
        let key = OperatorName::parse(name)?;
        let mut found = None;
        self.store
            .read(&mut |operators| found = operators.operators.get(&key).cloned());
        found
    }

    /// Picks up what other instances sharing the store changed (a lock, an enrollment), for an attempt
    /// about to be judged. A failure leaves what this instance saw last.
    pub async fn refresh(&self) {
        if let Err(error) = self.store.refresh().await {
            tracing::warn!(%error, "the operators could not be read again");
        }
    }

    /// The lock in force on `user` at `now` (a real operator's, or an unknown name's).
    pub fn locked(&self, user: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match self.get(user) {
            Some(operator) => operator.locked_at(now),
            None => self
                .unknown
                .lock()
                .get(user)
                .and_then(|(_, until)| until.filter(|until| now < *until)),
        }
    }

    /// The verifier of an operator's secret (its label: the operator's name).
    fn verifier(&self, secret: &str, name: &str) -> Option<Verifier> {
        let settings = TotpSettings {
            account: name.to_string(),
            ..self.totp.clone()
        };
        decode_secret(secret).map(|bytes| Verifier::new(bytes, settings))
    }

    /// Checks `credentials` at `now`: the code (TOTP or backup code) and, when passwords are on and the
    /// operator has one, the password. The same work is done for an unknown name.
    pub async fn check(&self, credentials: Credentials, now: OffsetDateTime) -> Result<Proof, Failure> {
        let operator = OperatorName::parse(&credentials.user)
            .and_then(|name| self.get(name.as_str()).map(|operator| (name, operator)))
            .filter(|(_, operator)| operator.is_enrolled());
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let digits = self.totp.digits;
        let password_ok = if self.auth.passwords && !credentials.signed_in {
            let stored = operator
                .as_ref()
                .and_then(|(_, operator)| operator.password.clone());
            let has_password = stored.is_some();
            let given = credentials.password.clone().unwrap_or_default();
            let matched = self
                .hasher
                .verify(given.chars().take(hashing::MAX_INPUT).collect(), stored)
                .await;
            // An operator enrolled before passwords were turned on has none yet: the code alone.
            matched || (!has_password && operator.is_some())
        } else {
            true
        };
        let (method, step, backup) = if let Ok(code) = TotpCode::parse(&credentials.code, digits) {
            let verdict = match &operator {
                Some((name, operator)) => {
                    let verifier = operator
                        .secret
                        .as_deref()
                        .and_then(|secret| self.verifier(secret, name.as_str()))
                        .unwrap_or_else(|| self.decoy.clone());
                    verifier.verify(&code, unix, operator.last_step)
                }
                None => {
                    let _ = self.decoy.verify(&code, unix, None);
                    Verdict::Wrong
                }
            };
            // A code of the right length may also be one sent by mail; checked the same way for a known
            // name and an unknown one.
            let mailed = operator.as_ref().and_then(|(name, operator)| {
                let sent = operator.email_code.as_ref().filter(|sent| now < sent.expires)?;
                let given = email_code_hash(name, code.as_str());
                bool::from(given.as_bytes().ct_eq(sent.hash.as_bytes())).then(|| sent.hash.clone())
            });
            if operator.is_none() {
                let _ = sha256_hex(code.as_str());
            }
            match (verdict, mailed) {
                (Verdict::Accepted { step }, _) => (Method::Totp, Some(step), None),
                (_, Some(hash)) => (Method::EmailCode, None, Some(hash)),
                (Verdict::Wrong, None) => return Err(Failure::Wrong),
                (Verdict::Replayed, None) => return Err(Failure::Replayed),
            }
        } else if let Some(code) = normalized_backup_code(&credentials.code) {
            let stored = operator
                .as_ref()
                .map(|(_, operator)| operator.backup_codes.hashes.clone())
                .unwrap_or_default();
            match self.hasher.find(code, stored.clone()).await {
                Some(index) => (Method::BackupCode, None, stored.get(index).cloned()),
                None => return Err(Failure::Wrong),
            }
        } else {
            return Err(Failure::Malformed);
        };
        let Some((name, operator)) = operator.filter(|_| password_ok) else {
            return Err(Failure::Wrong);
        };
        Ok(Proof {
            name,
            role: operator.role,
            method,
            step,
            backup,
        })
    }

    /// Spends what `proof` used (the code's step, the backup code), durably, and notes the sign-in or
    /// the run; the operator's failures are forgiven. Returns the backup codes left. On error nothing
    /// was spent: the caller must not go on.
    pub async fn commit(&self, proof: &Proof, now: OffsetDateTime, ran: bool) -> Result<usize, StoreError> {
        let mut left = 0;
        let mut spent = true;
        self.store
            .transact(&mut |operators| {
                let Some(operator) = operators.operators.get_mut(&proof.name) else {
                    spent = false;
                    return false;
                };
                if let Some(step) = proof.step {
                    // Another attempt may have used a later step meanwhile: never go back.
                    if operator.last_step.is_some_and(|last| last >= step) {
                        spent = false;
                        return false;
                    }
                    operator.last_step = Some(step);
                }
                if proof.method == Method::EmailCode {
                    let current = operator
                        .email_code
                        .as_ref()
                        .is_some_and(|sent| Some(&sent.hash) == proof.backup.as_ref());
                    if !current {
                        spent = false;
                        return false;
                    }
                    operator.email_code = None;
                } else if let Some(hash) = &proof.backup {
                    let before = operator.backup_codes.hashes.len();
                    operator.backup_codes.hashes.retain(|stored| stored != hash);
                    if operator.backup_codes.hashes.len() == before {
                        spent = false;
                        return false;
                    }
                }
                operator.failures = 0;
                if ran {
                    operator.last_run = Some(now);
                } else {
                    operator.last_sign_in = Some(now);
                }
                left = operator.backup_codes.hashes.len();
                true
            })
            .await?;
        if spent {
            if proof.method == Method::BackupCode && left == BACKUP_CODES_LOW {
                let body = format!(
                    "{name}, a backup code was just used: {left} are left. Make new ones on /account \
                     (your app's code is asked).\n",
                    name = proof.name
                );
                self.mail_to(&proof.name, "authrun: 2 backup codes left", body);
            }
            Ok(left)
        } else {
            // The operator was removed, or the code spent by another attempt, since it was checked.
            Err(StoreError::Conflict)
        }
    }

    /// Counts a failure of `user` at `now`; returns the end of the lock it started, if it did.
    pub async fn fail(&self, user: &str, now: OffsetDateTime) -> Result<Option<OffsetDateTime>, StoreError> {
        let until = later(now, self.lock);
        let known = OperatorName::parse(user).filter(|name| self.get(name.as_str()).is_some());
        let Some(name) = known else {
            let mut unknown = self.unknown.lock();
            if unknown.len() >= MAX_UNKNOWN && !unknown.contains_key(user) {
                unknown.retain(|_, (_, lock)| lock.is_some_and(|lock| now < lock));
                if unknown.len() >= MAX_UNKNOWN {
                    unknown.clear();
                }
            }
            let entry = unknown
                .entry(user.chars().take(64).collect())
                .or_insert((0, None));
            entry.0 += 1;
            if entry.0 >= self.max_failures {
                *entry = (0, Some(until));
                return Ok(Some(until));
            }
            return Ok(None);
        };
        let mut locked = None;
        self.store
            .transact(&mut |operators| {
                let Some(operator) = operators.operators.get_mut(&name) else {
                    return false;
                };
                operator.failures += 1;
                if operator.failures >= self.max_failures {
                    operator.failures = 0;
                    operator.locked_until = Some(until);
                    locked = Some(until);
                }
                true
            })
            .await?;
        if let Some(until) = locked {
            let body = format!(
                "{name}, after {max} failed attempts your authrun account is locked until {until}. If it was \
                 not you, tell an admin: someone is trying your name.\n",
                max = self.max_failures,
                until = crate::model::time::format_time(until),
            );
            self.mail_to(&name, "authrun: your account is locked", body);
        }
        Ok(locked)
    }

    /// The pending enrollment of `token` at `now`, if the token is known, unused and unexpired.
    pub fn pending(&self, token: &str, now: OffsetDateTime) -> Option<Pending> {
        let hash = sha256_hex(token);
        let mut found = None;
        self.store.read(&mut |operators| {
            for (name, operator) in &operators.operators {
                if let Some(enrollment) = &operator.enrollment {
                    let same = enrollment.token_sha256.as_bytes().ct_eq(hash.as_bytes());
                    if bool::from(same) && now < enrollment.expires {
                        found = Some(Pending {
                            name: name.clone(),
                            secret: enrollment.secret.clone(),
                            expires: enrollment.expires,
                        });
                    }
                }
            }
        });
        found
    }

    /// The `otpauth://` URI of a pending enrollment's secret.
    pub fn provisioning_uri(&self, pending: &Pending) -> Option<String> {
        self.verifier(&pending.secret, pending.name.as_str())?
            .provisioning_uri()
            .ok()
    }

    /// Completes the enrollment of `token` with a code of its secret (and the password, when passwords
    /// are on): returns the backup codes, shown once. A wrong code counts; the fifth revokes the link.
    pub async fn enroll(
        &self,
        token: &str,
        code: &str,
        password: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, EnrollError> {
        let pending = self.pending(token, now).ok_or(EnrollError::NotFound)?;
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let verdict = TotpCode::parse(code, self.totp.digits)
            .ok()
            .zip(self.verifier(&pending.secret, pending.name.as_str()))
            .map(|(code, verifier)| verifier.verify(&code, unix, None));
        let Some(Verdict::Accepted { step }) = verdict else {
            return Err(self.enrollment_failed(&pending, now).await);
        };
        let password = match (self.auth.passwords, password) {
            (false, _) => None,
            (true, None) => return Err(EnrollError::MissingPassword),
            (true, Some(password)) if password.chars().count() < MIN_PASSWORD => {
                return Err(EnrollError::WeakPassword);
            }
            (true, Some(password)) => Some(
                self.hasher
                    .hash(password.chars().take(hashing::MAX_INPUT).collect())
                    .await?,
            ),
        };
        let codes = new_backup_codes();
        let hashes = self.backup_hashes(&codes).await?;
        let hash = sha256_hex(token);
        let mut done = false;
        self.store
            .transact(&mut |operators| {
                let Some(operator) = operators.operators.get_mut(&pending.name) else {
                    return false;
                };
                // Another request may have completed (or an admin reset) it meanwhile.
                let current = operator
                    .enrollment
                    .as_ref()
                    .is_some_and(|enrollment| enrollment.token_sha256 == hash);
                if !current {
                    return false;
                }
                operator.secret = Some(pending.secret.clone());
                operator.last_step = Some(step);
                operator.backup_codes = BackupCodes {
                    hashes: hashes.clone(),
                };
                operator.password = password.clone();
                operator.enrollment = None;
                operator.enrolled = Some(now);
                operator.failures = 0;
                operator.locked_until = None;
                done = true;
                true
            })
            .await?;
        if done {
            Ok(codes)
        } else {
            Err(EnrollError::NotFound)
        }
    }

    /// Counts a wrong code on an enrollment page, revoking the link at the limit.
    async fn enrollment_failed(&self, pending: &Pending, _now: OffsetDateTime) -> EnrollError {
        let mut tries_left = 0;
        let counted = self
            .store
            .transact(&mut |operators| {
                let Some(enrollment) = operators
                    .operators
                    .get_mut(&pending.name)
                    .and_then(|operator| operator.enrollment.as_mut())
                else {
                    return false;
                };
                enrollment.wrong += 1;
                tries_left = ENROLLMENT_TRIES.saturating_sub(enrollment.wrong);
                if tries_left == 0
                    && let Some(operator) = operators.operators.get_mut(&pending.name)
                {
                    operator.enrollment = None;
                }
                true
            })
            .await;
        match counted {
            Ok(()) => EnrollError::WrongCode { tries_left },
            Err(error) => EnrollError::Store(error),
        }
    }

    async fn backup_hashes(&self, codes: &[String]) -> Result<Vec<String>, hashing::HashError> {
        let normalized = codes
            .iter()
            .filter_map(|code| normalized_backup_code(code))
            .collect();
        self.hasher.hash_all(normalized).await
    }

    /// New backup codes for `name` (the old ones stop working), shown once.
    pub async fn regenerate_backup_codes(&self, name: &OperatorName) -> Result<Vec<String>, EnrollError> {
        let codes = new_backup_codes();
        let hashes = self.backup_hashes(&codes).await?;
        self.change(name, |operator| {
            operator.backup_codes = BackupCodes {
                hashes: hashes.clone(),
            }
        })
        .await?;
        Ok(codes)
    }

    /// Sets `name`'s password.
    pub async fn set_password(&self, name: &OperatorName, password: String) -> Result<(), EnrollError> {
        if password.chars().count() < MIN_PASSWORD {
            return Err(EnrollError::WeakPassword);
        }
        let hash = self
            .hasher
            .hash(password.chars().take(hashing::MAX_INPUT).collect())
            .await?;
        self.change(name, |operator| operator.password = Some(hash.clone()))
            .await?;
        Ok(())
    }

    async fn change(
        &self,
        name: &OperatorName,
        mut change: impl FnMut(&mut Operator) + Send,
    ) -> Result<(), StoreError> {
        let mut found = false;
        self.store
            .transact(&mut |operators| match operators.operators.get_mut(name) {
                Some(operator) => {
                    change(operator);
                    found = true;
                    true
                }
                None => false,
            })
            .await?;
        if found { Ok(()) } else { Err(StoreError::Conflict) }
    }

    /// Applies an admin's change (see the functions of this module), durably.
    pub async fn administer<R: Send>(
        &self,
        mut change: impl FnMut(&mut Operators) -> Result<R, AdminError> + Send,
    ) -> Result<R, AdminError> {
        let mut outcome = None;
        self.store
            .transact(&mut |operators| {
                let result = change(operators);
                let changed = result.is_ok();
                outcome = Some(result);
                changed
            })
            .await?;
        outcome.unwrap_or_else(|| Err(AdminError::Unknown(String::new())))
    }

    /// How long an enrollment link stays valid.
    pub fn enrollment_validity(&self) -> Duration {
        self.auth.enrollment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_codes_carry_sixty_bits_and_read_as_typed() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), BACKUP_CODES);
        for code in &codes {
            assert_eq!(code.len(), 14, "{code}");
            assert_eq!(code.matches('-').count(), 2);
            let normalized = normalized_backup_code(code).unwrap();
            assert_eq!(normalized.len(), BACKUP_LEN);
            assert_eq!(
                normalized_backup_code(&code.to_uppercase()),
                Some(normalized.clone())
            );
        }
        assert_eq!(
            normalized_backup_code("IL0O-aaaa-bbbb").as_deref(),
            Some("1100aaaabbbb")
        );
        assert_eq!(normalized_backup_code("123456"), None);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), BACKUP_CODES);
    }

    #[test]
    fn the_last_admin_cannot_be_removed_or_demoted() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut operators = Operators::default();
        let day = Duration::from_secs(86_400);
        add(&mut operators, "alice", Role::Admin, None, now, day).unwrap();
        add(&mut operators, "bob", Role::Operator, None, now, day).unwrap();
        assert!(matches!(
            add(&mut operators, "bob", Role::Operator, None, now, day),
            Err(AdminError::Exists(_))
        ));
        assert!(matches!(
            add(&mut operators, "Bob", Role::Operator, None, now, day),
            Err(AdminError::BadName(_))
        ));
        assert!(matches!(
            remove(&mut operators, "alice"),
            Err(AdminError::LastAdmin(_))
        ));
        assert!(matches!(
            set_role(&mut operators, "alice", Role::Operator),
            Err(AdminError::LastAdmin(_))
        ));
        set_role(&mut operators, "bob", Role::Admin).unwrap();
        remove(&mut operators, "alice").unwrap();
        assert!(matches!(
            remove(&mut operators, "alice"),
            Err(AdminError::Unknown(_))
        ));
    }
}
