//! Postern's configuration language: Momentum's `ecelerity.conf` syntax.
//!
//! The crate reads a file (and its includes) into a validated [`Config`]:
//! every option typed, every error collected with `file:line:col`, and the
//! scope order of the configuration reference applied by
//! [`Config::effective`], which gives the options in force for one
//! (binding, domain) queue and says which scope each came from.
//!
//! Main types: [`Config`] (the model), [`Effective`] (one queue's view),
//! [`Directive`] and [`DIRECTIVES`] (the table of every option), [`Value`]
//! (typed values), [`Errors`] (everything wrong with a file).
//!
//! ```
//! use postern_conf::{Config, Directive, Routing, Value};
//!
//! let text = r#"
//!     Gateway = 10.10.10.50            # route all mail to a smart host
//!     Domain local.example.com {       # except for this domain
//!       Gateway = 10.10.10.20
//!       Delivery_Method = LMTP
//!     }
//! "#;
//! let config = Config::from_text(text, "postern.conf".as_ref()).unwrap();
//! let local = config.effective("default", "local.example.com").unwrap();
//! assert!(matches!(local.routing(), Routing::Gateway(t, _) if t.to_string() == "10.10.10.20"));
//! let method = local.get(Directive::DeliveryMethod).unwrap();
//! assert_eq!(method.value.to_string(), "LMTP");
//! let other = config.effective("default", "example.org").unwrap();
//! assert!(matches!(other.routing(), Routing::Gateway(t, _) if t.to_string() == "10.10.10.50"));
//! assert_eq!(other.get(Directive::MaxOutboundConnections).unwrap().value, &Value::Count(32));
//! ```
#![warn(missing_docs)]

mod error;
mod lexer;
mod load;
pub use load::canonicalization;
mod model;
mod parser;
#[macro_use]
mod keywords;
mod reference;
mod reply_rule;
mod resolve;
mod route;
mod schema;
pub mod syntax;
mod value;

use std::path::Path;

pub use error::{Error, ErrorKind, Errors, Location};
pub use keywords::{
    AuthMech, DeliveryMethod, DomainVerification, OnFailure, RecipientVerification, SpamAction,
    TlsMode, TlsVerify,
};
pub use model::{
    Binding, BindingGroup, ClusterSettings, Config, Credentials, DkimStanza, DomainPattern,
    DomainSet, DomainStanza, HostStanza, Listen, Listener, MilterStanza, Options, Secret, Setting,
    normalize_domain,
};
pub use parser::{SyntaxError, parse};
pub use reference::reference_markdown;
pub use reply_rule::{CodePattern, ReplyClass, ReplyRule, RuleAction};
pub use resolve::{Effective, Level, Origin, Resolved, Routing, SCOPE_ORDER, default_value};
pub use route::{HostSpec, Lookup, RouteHost, RouteItem, Scheme, Target};
pub use schema::{DIRECTIVES, DefaultValue, Directive, Scope, Scopes, Section, Spec};
pub use value::{Kind, LogTarget, MaxRetries, Score, Throttle, Value};

impl Config {
    /// Reads the file at `path` and everything it includes.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, Errors> {
        load::load(path.as_ref())
    }

    /// Reads configuration text; `name` is used in error locations, and
    /// includes and relative paths resolve against its directory.
    pub fn from_text(text: &str, name: &Path) -> Result<Config, Errors> {
        load::load_text(text, name)
    }
}
