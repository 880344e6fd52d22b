//! Mail through the SMTP server of `[mail]`: notifications, `authrun mail test`, and the operators'
//! messages. One [`Mailer`] per server, built at start; each message opens its own connection.

use std::fmt;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSecurity, MailSettings, Mailbox};

/// Sends plain-text messages from the configured sender.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for messages about the server.
    server: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer").field("server", &self.server).finish()
    }
}

/// The server's answer to a message it took: its reply code and text (`250 OK: queued as 1234`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub text: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a message was not sent. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{address} is not a mail address: {reason}")]
    Address { address: String, reason: String },
    #[error("the message cannot be written: {0}")]
    Message(String),
    /// The server could not be reached, refused the login or the message, or did not answer in time.
    #[error("{server}: {reason}")]
    Server { server: String, reason: String },
}

impl Mailer {
    /// The mailer of `settings`. Fails only when TLS cannot be set up for the host name.
    pub fn new(settings: &MailSettings) -> Result<Self, MailError> {
        let server = format!("{}:{}", settings.host, settings.port);
        let fail = |error: lettre::transport::smtp::Error| MailError::Server {
            server: server.clone(),
            reason: error.to_string(),
        };
        let builder = match settings.security {
            MailSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host).map_err(fail)?
            }
            MailSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host).map_err(fail)?,
            MailSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from: settings.from.clone(),
            server,
        })
    }

    /// The server, `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends `body` as plain text to `to`, returning the server's answer.
    pub async fn send(&self, to: &Mailbox, subject: &str, body: &str) -> Result<Answer, MailError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|error| MailError::Message(error.to_string()))?;
        let response = self
            .transport
            .send(message)
            .await
            .map_err(|error| MailError::Server {
                server: self.server.clone(),
                reason: error.to_string(),
            })?;
        Ok(answer(&response))
    }

    /// [`Mailer::send`] to an address written as text.
    pub async fn send_to(&self, to: &str, subject: &str, body: &str) -> Result<Answer, MailError> {
        let mailbox = to.trim().parse::<Mailbox>().map_err(|error| MailError::Address {
            address: format!("`{to}`"),
            reason: error.to_string(),
        })?;
        self.send(&mailbox, subject, body).await
    }
}

fn answer(response: &Response) -> Answer {
    let code = response.code().to_string().parse().unwrap_or_default();
    Answer {
        code,
        text: response.message().collect::<Vec<_>>().join(" "),
    }
}
