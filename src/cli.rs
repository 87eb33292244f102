//! The command line: clap definitions only, with each flag's help beside it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "strongroom",
    version,
    about = "Client-side encrypted, signed, deduplicating backups"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a local path, file:///path, https://host:port/REPO or s3:http(s)://host:port/bucket/prefix
    #[arg(short = 'r', long = "repo", env = "STRONGROOM_REPO", global = true)]
    pub repo: Option<String>,
    /// Key file (full key or writer key)
    #[arg(short = 'k', long = "key", env = "STRONGROOM_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// Read the key file's passphrase from this file
    #[arg(long, global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for https:// repositories; keygen and
    /// key export-writer carry it in the key file
    #[arg(long, env = "STRONGROOM_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Read the server account's password from this file (else
    /// STRONGROOM_PASSWORD, else the terminal)
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
    /// Cache directory (default: $XDG_CACHE_HOME/strongroom or ~/.cache/strongroom)
    #[arg(long, env = "STRONGROOM_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Machine-readable JSON output
    #[arg(long, global = true)]
    pub json: bool,
    /// -v: backup names each new and modified file on stdout; -vv also unchanged ones
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a new full key file
    Keygen(KeygenArgs),
    /// Manage key files
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create a repository for the key
    Init,
    /// Back up paths into a new snapshot
    Backup(BackupArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List a directory of a snapshot
    Ls(LsArgs),
    /// Write one file's content to stdout
    Dump(DumpArgs),
    /// Restore a snapshot, or a path in it, into a directory
    Restore(RestoreArgs),
    /// Verify the repository's structure, and with --read-data all of its data
    Check(CheckArgs),
    /// Rebuild the index, or rewrite snapshots around lost data
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Remove stale locks (left by a process that died), or every lock
    Unlock(UnlockArgs),
    /// Remove the snapshots a retention policy does not keep (full key only)
    Forget(ForgetArgs),
    /// Remove the data no snapshot references, repacking packs partly used (full key only)
    Prune(PruneArgs),
    /// Replicate snapshots, verbatim, to a second repository of the same key
    Copy(CopyArgs),
    /// Show the paths added, removed and changed between two snapshots
    Diff(DiffArgs),
    /// Find which snapshots hold a path matching a glob, newest first
    Find(FindArgs),
    /// Show sizes: logical, unique, stored, and what deduplication saves
    Stats,
    /// Print a shell completion script (bash, zsh or fish) to stdout
    Completions {
        /// The shell
        shell: CompletionShell,
    },
    /// Show every snapshot as a read-only directory (FUSE), in the foreground
    Mount(MountArgs),
    /// The certificate authority of the strongroom server
    #[command(subcommand)]
    Ca(CaCommand),
    /// The strongroom server: repositories for accounts over HTTPS
    #[command(subcommand)]
    Server(ServerCommand),
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Serve repositories over HTTPS until SIGINT or SIGTERM
    Serve {
        /// Address and port to listen on, e.g. 0.0.0.0:8443 or [::]:8443
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The server's certificate (PEM), from `strongroom ca issue`
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// The certificate's private key (PEM)
        #[arg(long, value_name = "PEM")]
        key: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage the server's accounts
    #[command(subcommand)]
    Account(AccountCommand),
}

/// Where the server keeps repositories and accounts.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// A local directory
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// An S3 bucket and prefix, s3:http(s)://host:port/bucket/prefix
    /// (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)
    #[arg(long, value_name = "URL")]
    pub s3: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Add an account (its password from --password-file, STRONGROOM_PASSWORD or the terminal)
    Add {
        name: String,
        /// A role on a repository, REPO=admin|writer|reader (repeatable)
        #[arg(long = "role", value_name = "REPO=ROLE")]
        roles: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give an account a role on a repository
    Grant {
        name: String,
        #[arg(value_name = "REPO=ROLE")]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Take an account's role on a repository away
    Revoke {
        name: String,
        #[arg(value_name = "REPO")]
        repo: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set an account's password, with a reset token or as the operator;
    /// ends the account's sessions
    Passwd {
        name: String,
        /// The one-time token `account reset` printed; without a value it
        /// is read from STRONGROOM_RESET_TOKEN or the terminal
        #[arg(long, value_name = "TOKEN", num_args = 0..=1, default_missing_value = "")]
        token: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Clear an account's password and print a one-time token (good for
    /// 24 hours) that sets a new one; ends the account's sessions
    Reset {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an account (its repositories stay)
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List accounts and their roles
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Make a CA: DIR/ca.pem (for clients) and DIR/ca.key (keep offline)
    Init {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a server certificate signed by the CA: DIR/NAME.pem, DIR/NAME.key
    Issue {
        /// The directory holding ca.pem and ca.key
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The server's host name or IP address, as clients will name it
        #[arg(long, value_name = "NAME")]
        host: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key file (must not exist)
    #[arg(long)]
    pub out: PathBuf,
    /// Leave the key file unencrypted (mode 0600), for unattended hosts
    #[arg(long)]
    pub no_passphrase: bool,
    /// RSA modulus size in bits (at least 3072)
    #[arg(long, default_value_t = crate::crypto::pk::DEFAULT_BITS)]
    pub bits: usize,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Export a writer key: it backs up for one host and reads no contents
    ExportWriter {
        /// Where to write the writer key file
        #[arg(long)]
        out: PathBuf,
        /// The host it signs for (default: this machine's host name)
        #[arg(long)]
        host: Option<String>,
        /// Leave the writer key file unencrypted (mode 0600)
        #[arg(long)]
        no_passphrase: bool,
        /// Read the new file's passphrase from this file
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// RSA modulus size of the writer signing key
        #[arg(long, default_value_t = crate::crypto::pk::DEFAULT_BITS)]
        bits: usize,
    },
    /// Export the public encryption key, for `key add-recipient` elsewhere
    ExportPublic {
        #[arg(long)]
        out: PathBuf,
    },
    /// Change the key file's passphrase
    Passwd {
        /// Read the new passphrase from this file
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Remove the passphrase instead
        #[arg(long)]
        no_passphrase: bool,
    },
    /// Add a recipient of the keys of every backup run, past (full key) and later
    AddRecipient {
        /// A file written by `key export-public`
        public_key_file: PathBuf,
    },
    /// Make a reading key from a recovery key (this -k) that was added
    /// with `key add-recipient`, and the repository's public file
    Recover {
        /// The repository's public file, written by `key export-public` with its full key
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
        /// Where to write the reading key
        #[arg(long)]
        out: PathBuf,
        /// Leave the reading key file unencrypted (mode 0600)
        #[arg(long)]
        no_passphrase: bool,
        /// Read the new file's passphrase from this file
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Stop trusting a writer key from now on: every key of a host, or one by its fingerprint
    RevokeWriter {
        /// A host name, or a writer's fingerprint (or a unique prefix of 8 hex digits or more)
        writer: String,
    },
    /// Show the recipients, the writer keys seen and the revocations
    List,
    /// Show what a key file is (full or writer key, its host, whether a
    /// passphrase protects it, whether it carries a CA), without its passphrase
    Show,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up
    #[arg(required_unless_present = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's; a writer key's own host)
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time to record, RFC 3339 (default: now)
    #[arg(long)]
    pub time: Option<String>,
    /// Leave out paths matching this glob (repeatable); without a `/` it matches any name
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Read exclude globs from a file, one per line
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<PathBuf>,
    /// Do not cross filesystem boundaries
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up standard input as one file
    #[arg(long, requires = "stdin_filename")]
    pub stdin: bool,
    /// Name of the file standard input is stored as
    #[arg(long)]
    pub stdin_filename: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only this host's snapshots
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// latest, an id, or an id prefix of at least 8 hex digits
    pub snapshot: String,
    /// Directory inside the snapshot (default: its root)
    pub path: Option<PathBuf>,
    /// With `latest`: that host's newest snapshot
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    pub snapshot: String,
    /// The file inside the snapshot
    pub path: PathBuf,
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH
    pub snapshot: String,
    /// Directory to restore into
    #[arg(long)]
    pub target: PathBuf,
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read, decrypt and verify every blob of every pack
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs: drop entries of missing packs,
    /// index valid packs from their headers, replace unreadable index files
    Index,
    /// Rewrite snapshots that reference lost data (full key only): lost
    /// parts of files become holes and the files are marked damaged, lost
    /// directories become empty
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Args, Debug)]
pub struct RepairSnapshotsArgs {
    /// Name what would be rewritten, and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Remove each damaged snapshot once its repaired copy is written
    #[arg(long)]
    pub forget: bool,
}

/// The retention policy: each snapshot kept by any rule is kept. Counts
/// take -1 for unlimited; spans are like 90d, 6y, 1y6m, 36h (y, m, d, h).
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Remove these snapshots instead of applying a policy: ids, prefixes,
    /// `latest`, or the full name of a refused snapshot
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest days (UTC) that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within this span before the group's newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<String>,
    /// Keep the newest snapshot of every hour within this span before the group's newest
    #[arg(long, value_name = "SPAN")]
    pub keep_within_hourly: Option<String>,
    /// Keep the newest snapshot of every day within this span (the seed's policy: 90d)
    #[arg(long, value_name = "SPAN")]
    pub keep_within_daily: Option<String>,
    /// Keep the newest snapshot of every ISO week within this span
    #[arg(long, value_name = "SPAN")]
    pub keep_within_weekly: Option<String>,
    /// Keep the newest snapshot of every month within this span (the seed's policy: 6y)
    #[arg(long, value_name = "SPAN")]
    pub keep_within_monthly: Option<String>,
    /// Keep the newest snapshot of every year within this span
    #[arg(long, value_name = "SPAN")]
    pub keep_within_yearly: Option<String>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// What makes a group the policy applies to on its own: any of host,
    /// paths, tags, comma-separated, or "" for one group
    #[arg(long, default_value = "host,paths", value_name = "KEYS")]
    pub group_by: String,
    /// Only this host's snapshots
    #[arg(long)]
    pub host: Option<String>,
    /// Show what would be removed, and remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Prune afterwards: remove the data only the removed snapshots used
    #[arg(long)]
    pub prune: bool,
    /// With --prune: the unused space to tolerate (see `prune --max-unused`)
    #[arg(long, value_name = "LIMIT", default_value = "5%", requires = "prune")]
    pub max_unused: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The unused space to tolerate in packs still partly used, as a
    /// percentage of the space used (`5%`), or `unlimited` to repack nothing
    #[arg(long, value_name = "LIMIT", default_value = "5%")]
    pub max_unused: String,
    /// Show what would be removed and repacked, and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot (latest, an id or a prefix)
    pub first: String,
    /// The newer snapshot
    pub second: String,
    /// With `latest`: that host's newest
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob patterns: one without `/` matches a name anywhere, one with `/`
    /// the whole path (`*` stays within a name, `**` crosses directories)
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Only this host's snapshots
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The second repository (a path, s3:... or https://...); made if it does not exist
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The account password of an https:// destination, when it differs
    /// from the source's (else --password-file, STRONGROOM_PASSWORD or a prompt)
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Only these snapshots (latest, ids or prefixes; full key only): by
    /// default, every snapshot and everything it needs
    pub snapshots: Vec<String>,
    /// With `latest`: that host's newest
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, stale or not, even of a run still going (full key only)
    #[arg(long)]
    pub remove_all: bool,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An empty directory to mount on
    pub mountpoint: PathBuf,
    /// Show only this snapshot's tree at the mount point (latest, an id or a prefix)
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Only this host's snapshots
    #[arg(long)]
    pub host: Option<String>,
    /// Let other users in (stored permissions are still enforced)
    #[arg(long)]
    pub allow_other: bool,
    /// Disk space for encrypted blobs kept in the cache directory across
    /// mounts, least recently used evicted, e.g. 512M, 2G; decrypted blobs
    /// are kept in memory up to the smaller of this and 128M
    #[arg(long, default_value = "512M")]
    pub cache_size: String,
    /// Keep no blobs on disk: read them from the repository each mount,
    /// cached in memory only
    #[arg(long, conflicts_with = "disk_cache")]
    pub no_disk_cache: bool,
    /// Keep blobs on disk also for a repository in a local directory (by
    /// default only remote repositories' are: a local one's reads cost no
    /// more than the cache's); worth it for slow or removable storage
    #[arg(long)]
    pub disk_cache: bool,
}
