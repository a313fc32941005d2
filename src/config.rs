//! Config files of the daemons: `dfs storage|broker|watch|up|web --config FILE` (or `DFS_CONFIG`).
//!
//! A config file is TOML with one `key = value` per option, the key being the option's long name
//! without dashes in front (`base-port = 9000`, `keep-deleted = true`,
//! `ignore = ["*.tmp", "build/"]` for a repeatable option). The valid keys are read from the
//! subcommand's clap definition, so every option a role declares can be set in its file.
//!
//! Precedence: command line, then environment (`DFS_*`), then file, then default. A first,
//! lenient parse finds the subcommand, the file, and which options the command line or the
//! environment already set; the file's values for the others are appended to the command line as
//! if typed after the subcommand, and the final parse is clap's usual one, with all its checks.
//! Each file value is checked on its own first, so that a bad one is reported with the file,
//! line, key and value rather than as a command-line error.

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The subcommands that take `--config`.
pub const DAEMONS: [&str; 5] = ["storage", "broker", "watch", "up", "web"];

/// The id of the `--config` option.
const CONFIG: &str = "config";

/// Why the command line could not be turned into options.
#[derive(Debug)]
pub enum ParseError {
    /// The command line itself (clap's error, or `--help` / `--version`).
    Cli(clap::Error),
    /// The config file: one line naming the file, the key, the value and what is wrong.
    Config(String),
}

/// The command of `P` with `--config FILE` added to every daemon subcommand.
pub fn command<P: CommandFactory>() -> Command {
    P::command().mut_subcommands(|sub| {
        if DAEMONS.contains(&sub.get_name()) {
            sub.arg(config_arg())
        } else {
            sub
        }
    })
}

fn config_arg() -> Arg {
    Arg::new(CONFIG)
        .long(CONFIG)
        .env("DFS_CONFIG")
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help(
            "TOML file of options, one `long-option-name = value` each \
             (e.g. `base-port = 9000`); the command line and DFS_* variables win over it",
        )
}

/// Parses `argv` (program name first) into `P`, with the values of the daemon's config file
/// for the options the command line and the environment left unset.
pub fn parse<P: CommandFactory + FromArgMatches>(argv: Vec<OsString>) -> Result<P, ParseError> {
    let mut cmd = command::<P>();
    let argv = with_config_file(&cmd, argv)?;
    let mut matches = cmd
        .try_get_matches_from_mut(argv)
        .map_err(ParseError::Cli)?;
    P::from_arg_matches_mut(&mut matches).map_err(|e| ParseError::Cli(e.format(&mut cmd)))
}

/// `argv` followed by the options of the config file given to a daemon subcommand, if any.
fn with_config_file(cmd: &Command, mut argv: Vec<OsString>) -> Result<Vec<OsString>, ParseError> {
    // Errors are left to the final parse, which reports them in full.
    let Ok(matches) = cmd.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(argv);
    };
    if !DAEMONS.contains(&name) {
        return Ok(argv);
    }
    let Some(file) = sub_matches.get_one::<PathBuf>(CONFIG) else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        ParseError::Config(format!(
            "cannot read the config file {}: {e}",
            file.display()
        ))
    })?;
    // Built, the subcommand also holds the global options (`log-level`...).
    let mut built = cmd.clone();
    built.build();
    let sub = built
        .find_subcommand(name)
        .expect("the subcommand just parsed exists");
    let unset = |id: &str| {
        !matches!(
            sub_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let extra = file_args(file, &text, sub, unset).map_err(ParseError::Config)?;
    argv.extend(extra);
    Ok(argv)
}

/// The command-line arguments that set, from config `text` (read from `file`), the options of
/// `sub` for which `unset(id)` holds. `Err` is one line naming the file, line, key and problem.
fn file_args(
    file: &Path,
    text: &str,
    sub: &Command,
    unset: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let at = |span: std::ops::Range<usize>| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("config file {}, line {line}", file.display())
    };
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => format!("{}: {}", at(span), e.message().trim()),
            None => format!("config file {}: {}", file.display(), e.message().trim()),
        })?;
    let keys = settable(sub);
    let mut out = Vec::new();
    for (key, value) in &table {
        let where_ = at(key.span());
        let Some(arg) = keys.iter().find(|a| a.get_long() == Some(key.get_ref())) else {
            let hint = match value.get_ref() {
                toml::Value::Table(_) => " (the file has no [sections]: write key = value lines)",
                _ => "",
            };
            return Err(format!(
                "{where_}: unknown key {:?} for dfs {}{}{hint}; the keys are: {}",
                key.get_ref(),
                sub.get_name(),
                did_you_mean(key.get_ref(), &keys),
                keys.iter()
                    .filter_map(|a| a.get_long())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let tokens = arg_tokens(arg, value.get_ref())
            .map_err(|why| format!("{where_}: {} = {}: {why}", key.get_ref(), value.get_ref()))?;
        if unset(arg.get_id().as_str()) {
            out.extend(tokens.into_iter().map(OsString::from));
        }
    }
    Ok(out)
}

/// The options of `sub` a config file may set: every one with a long name, except `--config`
/// itself, `--help` and `--version`.
fn settable(sub: &Command) -> Vec<&Arg> {
    sub.get_arguments()
        .filter(|a| a.get_long().is_some())
        .filter(|a| !matches!(a.get_id().as_str(), CONFIG | "help" | "version"))
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .collect()
}

/// ` (did you mean "base-port"?)` when a key is close to `key`, else nothing.
fn did_you_mean(key: &str, keys: &[&Arg]) -> String {
    let dashed = key.replace('_', "-");
    keys.iter()
        .filter_map(|a| a.get_long())
        .map(|k| (strsim::jaro(&dashed, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

/// The command-line arguments that give `arg` the config `value`; `Err` says why the value
/// does not fit the option.
fn arg_tokens(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let long = arg.get_long().expect("settable options have a long name");
    let flag = format!("--{long}");
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let Some(on) = value.as_bool() else {
                return Err("expected true or false".into());
            };
            let set = on == matches!(arg.get_action(), ArgAction::SetTrue);
            Ok(if set { vec![flag] } else { vec![] })
        }
        ArgAction::Count => match value.as_integer() {
            Some(n) if n >= 0 => Ok(vec![flag; n as usize]),
            _ => Err("expected a count (0, 1, 2...)".into()),
        },
        ArgAction::Append => {
            let items = match value {
                toml::Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            items
                .into_iter()
                .map(|v| option_token(arg, &flag, v))
                .collect()
        }
        ArgAction::Set => Ok(vec![option_token(arg, &flag, value)?]),
        _ => Err("this option cannot be set in a config file".into()),
    }
}

/// `--long=VALUE` for one value of `arg`, checked with the option's own parser.
fn option_token(arg: &Arg, flag: &str, value: &toml::Value) -> Result<String, String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) if matches!(arg.get_action(), ArgAction::Append) => {
            return Err("expected a list of single values, not nested lists".into())
        }
        toml::Value::Array(_) => return Err("expected a single value, not a list".into()),
        toml::Value::Table(_) => return Err("expected a single value, not a table".into()),
    };
    let probe = Command::new("config").no_binary_name(true).arg(
        Arg::new("value")
            .long("value")
            .action(ArgAction::Set)
            .value_delimiter(arg.get_value_delimiter())
            .value_parser(arg.get_value_parser().clone()),
    );
    probe
        .try_get_matches_from([format!("--value={text}")])
        .map_err(|e| reason(&e))?;
    Ok(format!("{flag}={text}"))
}

/// What is wrong with a value clap refused, without clap's framing.
fn reason(e: &clap::Error) -> String {
    use std::error::Error as _;
    if let Some(source) = e.source() {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    e.kind().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, global = true, default_value = "info")]
        log_level: String,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Storage(Opts),
        Fetch(Opts),
    }

    #[derive(clap::Args, Debug)]
    struct Opts {
        #[arg(long, env = "DFS_CONFIG_TEST_BASE_PORT", default_value_t = 9000)]
        base_port: u16,
        #[arg(long, env = "DFS_CONFIG_TEST_BIND", default_value = "0.0.0.0")]
        bind: String,
        #[arg(long)]
        ignore: Vec<String>,
        #[arg(long)]
        keep_deleted: bool,
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: u16,
        #[arg(long)]
        ready_file: Option<PathBuf>,
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    }

    /// A config file with `text` in a fresh folder (kept alive by the returned guard).
    fn config(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dfs.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    fn run(args: &[&str]) -> Result<Cli, ParseError> {
        parse::<Cli>(
            std::iter::once("dfs")
                .chain(args.iter().copied())
                .map(Into::into)
                .collect(),
        )
    }

    /// The log level and the storage options `args` parse to.
    fn opts(args: &[&str]) -> (String, Opts) {
        match run(args) {
            Ok(Cli {
                log_level,
                command: Sub::Storage(o),
            }) => (log_level, o),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => panic!("{args:?} failed: {e:?}"),
        }
    }

    fn config_error(args: &[&str]) -> String {
        match run(args) {
            Err(ParseError::Config(msg)) => msg,
            other => panic!("{args:?}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn file_sets_every_kind_of_option() {
        let (_d, path) = config(
            "base-port = 9100\nbind = \"127.0.0.1\"\nignore = [\"*.tmp\", \"build/\"]\n\
             keep-deleted = true\nthreads = 4\nready-file = \"/run/r.json\"\nlog-level = \"debug\"\n",
        );
        let (log_level, o) = opts(&["storage", "--config", &path]);
        assert_eq!(o.base_port, 9100);
        assert_eq!(o.bind, "127.0.0.1");
        assert_eq!(o.ignore, ["*.tmp", "build/"]);
        assert!(o.keep_deleted);
        assert_eq!(o.threads, 4);
        assert_eq!(o.ready_file, Some(PathBuf::from("/run/r.json")));
        assert_eq!(log_level, "debug");
    }

    #[test]
    fn a_single_value_for_a_repeatable_option_and_false_flags() {
        let (_d, path) = config("ignore = \"*.tmp\"\nkeep-deleted = false\n");
        let (_, o) = opts(&["storage", "--config", &path]);
        assert_eq!(o.ignore, ["*.tmp"]);
        assert!(!o.keep_deleted);
    }

    #[test]
    fn delimited_values_are_split_as_on_the_command_line() {
        let (_d, path) = config("ports = [\"1,2\", 3]\n");
        let (_, o) = opts(&["storage", "--config", &path]);
        assert_eq!(o.ports, [1, 2, 3]);
        let (_d, path) = config("ports = \"1,x\"\n");
        let msg = config_error(&["storage", "--config", &path]);
        assert!(msg.contains("ports = \"1,x\": invalid digit"), "{msg}");
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let (_d, path) = config("threads = 4\nignore = [\"a\"]\nlog-level = \"debug\"\n");
        let (log_level, o) = opts(&[
            "--log-level",
            "warn",
            "storage",
            "--threads",
            "8",
            "--ignore",
            "b",
            "--config",
            &path,
        ]);
        assert_eq!(o.threads, 8);
        assert_eq!(o.ignore, ["b"], "the command line replaces the file's list");
        assert_eq!(log_level, "warn");
        // Not in the file, not on the command line: the default.
        assert_eq!(o.base_port, 9000);
    }

    #[test]
    fn environment_beats_file() {
        // The only test that sets these variables.
        std::env::set_var("DFS_CONFIG_TEST_BIND", "10.0.0.1");
        let (_d, path) = config("bind = \"127.0.0.1\"\n");
        let (_, o) = opts(&["storage", "--config", &path]);
        std::env::remove_var("DFS_CONFIG_TEST_BIND");
        assert_eq!(o.bind, "10.0.0.1");
    }

    #[test]
    fn unknown_key_names_the_file_line_and_a_close_key() {
        let (_d, path) = config("bind = \"127.0.0.1\"\n\nbase_port = 9100\n");
        let msg = config_error(&["storage", "--config", &path]);
        assert!(
            msg.contains(&format!("config file {path}, line 3")),
            "{msg}"
        );
        assert!(msg.contains("unknown key \"base_port\""), "{msg}");
        assert!(msg.contains("did you mean \"base-port\"?"), "{msg}");
        assert!(
            msg.contains("the keys are: base-port, bind, ignore"),
            "{msg}"
        );
        assert!(!msg.contains("config,") && !msg.contains("help"), "{msg}");
    }

    #[test]
    fn bad_values_name_key_value_and_why() {
        let cases = [
            (
                "base-port = \"lots\"",
                "base-port = \"lots\": invalid digit found in string",
            ),
            (
                "base-port = 70000",
                "base-port = 70000: 70000 is not in 0..=65535",
            ),
            ("threads = 0", "threads = 0: 0 is not in 1..=1024"),
            (
                "keep-deleted = \"yes\"",
                "keep-deleted = \"yes\": expected true or false",
            ),
            (
                "bind = [\"a\", \"b\"]",
                "expected a single value, not a list",
            ),
            ("ignore = [[\"a\"]]", "expected a list of single values"),
            ("bind = { a = 1 }", "expected a single value, not a table"),
        ];
        for (text, want) in cases {
            let (_d, path) = config(&format!("# a comment\n{text}\n"));
            let msg = config_error(&["storage", "--config", &path]);
            assert!(
                msg.starts_with(&format!("config file {path}, line 2: ")) && msg.contains(want),
                "{text}: got {msg:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn a_bad_value_is_an_error_even_when_the_command_line_sets_the_option() {
        let (_d, path) = config("threads = 0\n");
        let msg = config_error(&["storage", "--threads", "3", "--config", &path]);
        assert!(msg.contains("threads = 0"), "{msg}");
    }

    #[test]
    fn syntax_errors_and_missing_files() {
        let (_d, path) = config("bind = \"127.0.0.1\"\nbase-port = \n");
        let msg = config_error(&["storage", "--config", &path]);
        assert!(
            msg.starts_with(&format!("config file {path}, line 2: ")),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg:?}");
        let msg = config_error(&["storage", "--config", "/nonexistent/dfs.toml"]);
        assert!(
            msg.starts_with("cannot read the config file /nonexistent/dfs.toml: "),
            "{msg}"
        );
    }

    #[test]
    fn only_daemons_take_a_config_file() {
        let (_d, path) = config("bind = \"x\"\n");
        assert!(matches!(
            run(&["fetch", "--config", &path]),
            Err(ParseError::Cli(e)) if e.kind() == clap::error::ErrorKind::UnknownArgument
        ));
    }

    /// Uncomments every `# key = value` line of an example config of `deploy/`.
    fn uncommented(example: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(example);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.lines()
            .filter_map(|l| l.strip_prefix("# ").or(Some(l)))
            .filter(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                l.contains(" = ")
                    && !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn example_configs_name_every_option_with_a_valid_value() {
        let mut cmd = command::<crate::Cli>();
        cmd.build();
        for (sub, example) in [
            ("storage", "storage.toml"),
            ("broker", "broker.toml"),
            ("watch", "watch.toml"),
            ("web", "web.toml"),
        ] {
            let text = uncommented(example);
            let sub_cmd = cmd.find_subcommand(sub).unwrap();
            file_args(Path::new(example), &text, sub_cmd, |_| true)
                .unwrap_or_else(|e| panic!("{example} with every line uncommented: {e}"));
            let table: toml::Table = toml::from_str(&text).unwrap();
            let missing: Vec<&str> = settable(sub_cmd)
                .into_iter()
                .filter_map(|a| a.get_long())
                .filter(|k| !table.contains_key(*k))
                .collect();
            assert!(missing.is_empty(), "{example} does not show {missing:?}");
        }
    }
}
