//! `postern check-config` and `postern config effective`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use postern_conf::{Config, DIRECTIVES, DefaultValue, Effective, Errors, Routing, Scope};

/// Exit status for an invalid configuration.
const INVALID: u8 = 2;

/// Loads `file`, or prints every error to stderr.
pub(crate) fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|errors: Errors| {
        let lines: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
        report(file, &lines)
    })
}

/// Prints each error, then their count; the exit status of a bad file.
fn report(file: &Path, errors: &[String]) -> ExitCode {
    let mut err = io::stderr().lock();
    for e in errors {
        let _ = writeln!(err, "{e}");
    }
    let n = errors.len();
    let s = if n == 1 { "" } else { "s" };
    let _ = writeln!(err, "{}: {n} error{s}", file.display());
    ExitCode::from(INVALID)
}

/// Ends a command whose output went to `result`: a closed pipe (`| head`)
/// is a normal end, any other write error a failure.
pub(crate) fn finish(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `postern check-config FILE`.
pub(crate) fn check(file: &Path) -> ExitCode {
    match load(file) {
        Ok(config) => {
            // DKIM keys are read as the daemon will read them.
            if let Err(errors) = crate::daemon::dkim::Signers::load(&config) {
                return report(file, &errors);
            }
            let n = config.files.len();
            let s = if n == 1 { "" } else { "s" };
            finish(writeln!(
                io::stdout().lock(),
                "{}: OK ({n} file{s} read)",
                file.display()
            ))
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
    match queue(file, &config, binding, domain) {
        Ok(eff) => finish(print_effective(&eff, &mut io::stdout().lock())),
        Err(code) => code,
    }
}

/// The effective options of one queue, or exit 2 when the binding is not
/// configured.
pub(crate) fn queue<'c>(
    file: &Path,
    config: &'c Config,
    binding: &str,
    domain: &str,
) -> Result<Effective<'c>, ExitCode> {
    config.effective(binding, domain).ok_or_else(|| {
        eprintln!(
            "{}: binding \"{binding}\" is not configured",
            file.display()
        );
        ExitCode::from(INVALID)
    })
}

/// Prints one line per option in configuration syntax, `# origin` after it;
/// options that are unset and have no fixed default are commented out.
fn print_effective(eff: &Effective<'_>, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "# effective options for binding \"{}\", domain \"{}\"",
        eff.binding(),
        eff.domain()
    )?;
    match eff.routing() {
        Routing::Gateway(t, origin) => writeln!(out, "# routing: Gateway \"{t}\" from {origin}")?,
        Routing::Routes(_, origin) => writeln!(out, "# routing: Routes from {origin}")?,
        Routing::Mx => writeln!(
            out,
            "# routing: the domain's MX records (no Gateway or Routes set)"
        )?,
    }
    let queue_scopes = [
        Scope::Global,
        Scope::BindingGroup,
        Scope::Binding,
        Scope::Domain,
    ];
    let specs: Vec<_> = DIRECTIVES
        .iter()
        .filter(|s| queue_scopes.iter().any(|q| s.scopes.contains(*q)))
        .collect();
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for spec in specs {
        match eff.get(spec.id) {
            Some(r) => {
                let value = r.value.to_string();
                writeln!(out, "{:<width$} = {value:<16}  # {}", spec.name, r.origin)?;
            }
            None => {
                let why = match spec.default {
                    DefaultValue::Computed(how) => how,
                    _ => "unset",
                };
                writeln!(out, "# {:<width$}   ({why})", spec.name)?;
            }
        }
    }
    Ok(())
}
