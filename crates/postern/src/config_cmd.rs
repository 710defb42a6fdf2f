//! `postern check-config` and `postern config effective`.

use std::path::Path;
use std::process::ExitCode;

use postern_conf::{Config, DIRECTIVES, DefaultValue, Errors, Routing, Scope};

/// Exit status for an invalid configuration.
const INVALID: u8 = 2;

/// Loads `file`, or prints every error to stderr.
fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|errors| report(file, &errors))
}

fn report(file: &Path, errors: &Errors) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    let n = errors.len();
    eprintln!(
        "{}: {n} error{}",
        file.display(),
        if n == 1 { "" } else { "s" }
    );
    ExitCode::from(INVALID)
}

/// `postern check-config FILE`.
pub(crate) fn check(file: &Path) -> ExitCode {
    match load(file) {
        Ok(config) => {
            let n = config.files.len();
            println!(
                "{}: OK ({n} file{} read)",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `postern config effective --domain D --binding B FILE`.
pub(crate) fn effective(file: &Path, binding: &str, domain: &str) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(eff) = config.effective(binding, domain) else {
        eprintln!(
            "{}: binding \"{binding}\" is not configured",
            file.display()
        );
        return ExitCode::from(INVALID);
    };
    println!(
        "# effective options for binding \"{}\", domain \"{}\"",
        eff.binding(),
        eff.domain()
    );
    match eff.routing() {
        Routing::Gateway(t, origin) => println!("# routing: Gateway \"{t}\" from {origin}"),
        Routing::Routes(_, origin) => println!("# routing: Routes from {origin}"),
        Routing::Mx => println!("# routing: the domain's MX records (no Gateway or Routes set)"),
    }
    let queue_scopes = [
        Scope::Global,
        Scope::BindingGroup,
        Scope::Binding,
        Scope::Domain,
    ];
    let rows: Vec<(String, String, String)> = DIRECTIVES
        .iter()
        .filter(|s| queue_scopes.iter().any(|q| s.scopes.contains(*q)))
        .map(|spec| match eff.get(spec.id) {
            Some(r) => (
                spec.name.to_owned(),
                r.value.to_string(),
                r.origin.to_string(),
            ),
            None => {
                let value = match spec.default {
                    DefaultValue::Computed(how) => format!("({how})"),
                    _ => "(unset)".to_owned(),
                };
                (spec.name.to_owned(), value, "default".to_owned())
            }
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (name, value, origin) in rows {
        println!("{name:<w0$}  {value:<w1$}  # {origin}");
    }
    ExitCode::SUCCESS
}
