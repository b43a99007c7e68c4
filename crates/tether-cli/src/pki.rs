//! `tether pki`: a small CA, server and device certificates, SPKI pins.
//!
//! ```text
//! tether pki init --dir pki [--key ecdsa-p256|rsa2048|rsa4096|ed25519] [--cn NAME] [--days N] [--force]
//! tether pki issue server --dir pki --san localhost --san 127.0.0.1 [--name N] [--key ...] [--days N] [--force]
//! tether pki issue client --dir pki --id device-1 [--key ...] [--days N] [--force]
//! tether pki pin pki/server.pem
//! tether pki show pki/server.pem
//! ```
//!
//! The work is done by the `tether-pki` library; this module parses flags and prints one or two
//! lines saying what was written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use tether_pki::{Ca, Dir, IssueOptions, KeyKind, Paths};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new CA: DIR/ca.pem (certificate) and DIR/ca.key (private key, mode 0600).
    Init(InitArgs),
    /// Issue a certificate signed by the CA in DIR.
    #[command(subcommand)]
    Issue(Issue),
    /// Print the SPKI pin (sha256/BASE64) of the first certificate in a PEM file.
    Pin {
        /// A PEM file holding a certificate.
        file: PathBuf,
    },
    /// Print subject, issuer, validity, SANs and pin of each certificate in a PEM file.
    Show {
        /// A PEM file holding one or more certificates.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Issue {
    /// A server certificate (EKU serverAuth): DIR/server.pem + DIR/server.key, or DIR/N.pem + DIR/N.key.
    Server(ServerArgs),
    /// A device certificate (EKU clientAuth, CN = device id): DIR/ID.pem + DIR/ID.key.
    Client(ClientArgs),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The PKI directory (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The CA's common name (default: "tether CA" and a random suffix, so that two CAs never
    /// share a name: verifiers look issuers up by name).
    #[arg(long, value_name = "NAME")]
    cn: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The PKI directory holding ca.pem and ca.key.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A DNS name or IP address the server answers to; repeat the flag or give several values.
    /// The first is also the common name.
    #[arg(long = "san", value_name = "NAME_OR_IP", required = true, num_args = 1..)]
    sans: Vec<String>,
    /// Base name of the files (default: server).
    #[arg(long, value_name = "N")]
    name: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The PKI directory holding ca.pem and ca.key.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The device id: 1 to 64 of A-Z a-z 0-9 . _ - (the certificate's common name and file name).
    #[arg(long, value_name = "DEVICE_ID")]
    id: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Kind of the new key.
    #[arg(long, value_enum, default_value_t = KeyArg::EcdsaP256)]
    key: KeyArg,
    /// Validity in days [default: 3650 for a CA, 365 for servers and devices].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: Option<u32>,
    /// Replace existing files instead of refusing.
    #[arg(long)]
    force: bool,
}

impl CommonArgs {
    fn options(&self) -> IssueOptions {
        IssueOptions {
            days: self.days,
            ..IssueOptions::with_key(self.key.into())
        }
    }
}

/// `--key` values; clap lists them in `--help`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyArg {
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "rsa2048")]
    Rsa2048,
    #[value(name = "rsa4096")]
    Rsa4096,
    #[value(name = "ed25519")]
    Ed25519,
}

impl From<KeyArg> for KeyKind {
    fn from(key: KeyArg) -> KeyKind {
        match key {
            KeyArg::EcdsaP256 => KeyKind::EcdsaP256,
            KeyArg::Rsa2048 => KeyKind::Rsa2048,
            KeyArg::Rsa4096 => KeyKind::Rsa4096,
            KeyArg::Ed25519 => KeyKind::Ed25519,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init(args) => init(&args)?,
        Command::Issue(Issue::Server(args)) => issue_server(&args)?,
        Command::Issue(Issue::Client(args)) => issue_client(&args)?,
        Command::Pin { file } => pin(&file)?,
        Command::Show { file } => show(&file)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    let dir = Dir::new(&args.dir);
    let paths = dir.ca_paths();
    if !args.common.force {
        refuse_existing(&paths)?;
    }
    let cn = match &args.cn {
        Some(cn) => cn.clone(),
        None => default_ca_name(),
    };
    let ca = Ca::init_with(&cn, &args.common.options())?;
    dir.write_ca(&ca, args.common.force)?;
    let info = tether_pki::describe(ca.cert_der())?;
    say!(
        "wrote CA {} and key {} ({}, valid until {})",
        paths.cert.display(),
        paths.key.display(),
        KeyKind::from(args.common.key),
        tether_pki::rfc3339(info.not_after),
    );
    say!("pin {}", info.pin);
    Ok(())
}

fn issue_server(args: &ServerArgs) -> anyhow::Result<()> {
    let dir = Dir::new(&args.dir);
    let paths = dir.server_paths(args.name.as_deref())?;
    if !args.common.force {
        refuse_existing(&paths)?;
    }
    let ca = dir.load_ca()?;
    let issued = ca.issue_server(&args.sans, &args.common.options())?;
    dir.write_issued(&paths, &issued, args.common.force)?;
    let info = tether_pki::describe(&issued.cert_der)?;
    say!(
        "wrote server certificate {} and key {} for {}",
        paths.cert.display(),
        paths.key.display(),
        info.sans.join(", "),
    );
    say!(
        "pin {} valid until {}",
        info.pin,
        tether_pki::rfc3339(info.not_after)
    );
    Ok(())
}

fn issue_client(args: &ClientArgs) -> anyhow::Result<()> {
    let dir = Dir::new(&args.dir);
    let paths = dir.client_paths(&args.id)?;
    if !args.common.force {
        refuse_existing(&paths)?;
    }
    let ca = dir.load_ca()?;
    let issued = ca.issue_client(&args.id, &args.common.options())?;
    dir.write_issued(&paths, &issued, args.common.force)?;
    let info = tether_pki::describe(&issued.cert_der)?;
    say!(
        "wrote device certificate {} and key {} for {}",
        paths.cert.display(),
        paths.key.display(),
        args.id,
    );
    say!(
        "pin {} valid until {}",
        info.pin,
        tether_pki::rfc3339(info.not_after)
    );
    Ok(())
}

/// Refuses before generating a key (RSA-4096 takes seconds) rather than after; `Dir` checks again
/// when it writes.
fn refuse_existing(paths: &Paths) -> anyhow::Result<()> {
    for path in [&paths.cert, &paths.key] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(tether_pki::Error::Exists { path: path.clone() }.into());
        }
    }
    Ok(())
}

fn read_pem(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

fn pin(file: &Path) -> anyhow::Result<()> {
    let pem = read_pem(file)?;
    let pin = tether_pki::spki_pin_from_pem(&pem).with_context(|| file.display().to_string())?;
    say!("{pin}");
    Ok(())
}

fn show(file: &Path) -> anyhow::Result<()> {
    let pem = read_pem(file)?;
    let certs = tether_pki::certs_from_pem(&pem).with_context(|| file.display().to_string())?;
    let now = tether_pki::time::OffsetDateTime::now_utc();
    for (i, der) in certs.iter().enumerate() {
        let info = tether_pki::describe(der)
            .with_context(|| format!("{}: certificate {}", file.display(), i + 1))?;
        if i > 0 {
            say!();
        }
        if certs.len() > 1 {
            say!("certificate {} of {}", i + 1, certs.len());
        }
        say!("{info}");
        if !info.is_valid_at(now) {
            let when = if now < info.not_before {
                "not valid yet"
            } else {
                "EXPIRED"
            };
            say!("status:     {when}");
        }
    }
    Ok(())
}

/// "tether CA 3f9c12ab": unique enough that two CAs made with defaults never share a subject.
fn default_ca_name() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    // RandomState is seeded from the OS's randomness: enough for a name, not for keys.
    let suffix = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32;
    format!("tether CA {suffix:08x}")
}
