//! The manual pages, generated from the command line's definitions:
//! `strongroom(1)`, with the environment, files, exit codes and examples,
//! and one page per subcommand (`strongroom-key-add-recipient(1)`, …).
//! `man/` holds them as generated; a test fails when they are out of date.

use clap::CommandFactory;

/// Every page: (file name, roff text).
pub fn pages() -> Vec<(String, String)> {
    let mut root = crate::cli::Cli::command();
    root.build();
    let mut out = Vec::new();
    render(&root, "strongroom", true, &mut out);
    out
}

fn render(cmd: &clap::Command, name: &str, top: bool, out: &mut Vec<(String, String)>) {
    let cmd = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("strongroom {}", env!("CARGO_PKG_VERSION")))
        .manual("strongroom manual");
    let mut buf: Vec<u8> = Vec::new();
    man.render_title(&mut buf).expect("to memory");
    man.render_name_section(&mut buf).expect("to memory");
    man.render_synopsis_section(&mut buf).expect("to memory");
    man.render_description_section(&mut buf).expect("to memory");
    man.render_options_section(&mut buf).expect("to memory");
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf).expect("to memory");
    }
    let mut text = String::from_utf8(buf).expect("roff is text");
    if top {
        text.push_str(TOP_SECTIONS);
    } else {
        text.push_str(SUB_SECTIONS);
    }
    out.push((format!("{name}.1"), text));
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        render(sub, &format!("{name}-{}", sub.get_name()), false, out);
    }
}

const SUB_SECTIONS: &str = r#".SH "EXIT STATUS"
0 success; 1 failure (the message names the object, pack or path); 2 usage
error; 3 a backup saved but some files could not be read; 130 interrupted.
.SH "SEE ALSO"
\fBstrongroom\fR(1), for the environment, files and examples.
"#;

const TOP_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBSTRONGROOM_REPO\fR
The repository, as \fB\-r\fR.
.TP
\fBSTRONGROOM_KEY\fR
The key file, as \fB\-k\fR.
.TP
\fBSTRONGROOM_PASSPHRASE\fR, \fBSTRONGROOM_PASSPHRASE_FILE\fR
The key file's passphrase, or a file holding it (else it is asked on the terminal).
.TP
\fBSTRONGROOM_CA\fR
The strongroom CA certificate to trust for https:// repositories, as \fB\-\-ca\fR.
.TP
\fBSTRONGROOM_CACHE_DIR\fR
The cache directory, as \fB\-\-cache\-dir\fR.
.TP
\fBSTRONGROOM_PASSWORD\fR
A strongroom server account's password (never on the command line).
.TP
\fBAWS_ACCESS_KEY_ID\fR, \fBAWS_SECRET_ACCESS_KEY\fR, \fBAWS_REGION\fR
Credentials of an s3: repository.
.SH FILES
.TP
\fI~/.strongroom.key\fR, or any path given with \fB\-k\fR
A key file: the full key (reads and signs everything), a writer key
(backs up for one host, reads no contents) or a reading key (made by
\fBkey recover\fR). Mode 0600; keep the full key offline.
.TP
\fI$XDG_CACHE_HOME/strongroom\fR, else \fI~/.cache/strongroom\fR
The cache directory: the sorted index, verified manifests, unwrapped run
keys (sealed under a key derived from the full key) and, for the mount,
encrypted blobs. It must be the user's own, mode 0700.
.TP
\fI/etc/strongroom/ca.pem\fR
The strongroom CA certificate trusted when neither \fB\-\-ca\fR nor the key file names one.
.TP
\fI/etc/strongroom/backup.env\fR
The settings of the nightly backup (the Debian package's
\fIstrongroom\-backup.timer\fR and \fIstrongroom\-backup.service\fR, which run
\fI/usr/libexec/strongroom/nightly\fR): \fBSTRONGROOM_REPO\fR,
\fBSTRONGROOM_KEY\fR, \fBSTRONGROOM_BACKUP_PATHS\fR, \fBSTRONGROOM_KEEP\fR,
\fBSTRONGROOM_COPY_TO\fR and the rest, documented in the file. Mode 0600.
.TP
\fI/etc/strongroom/server.env\fR, \fI/etc/strongroom/server/cert.pem\fR, \fIkey.pem\fR
The settings, certificate and key of \fIstrongroom\-server.service\fR,
which serves \fI/var/lib/strongroom\fR as the user \fB_strongroom\fR.
.SH "EXIT STATUS"
.TP
0
Success.
.TP
1
Failure; the message names the object, pack or path.
.TP
2
Usage error: bad arguments, no such snapshot, a writer key asked to read.
.TP
3
A backup was saved, but some files could not be read, or some paths given do not exist (each named on stderr).
.TP
130
Interrupted (SIGINT or SIGTERM): the lock and temporary files were removed.
.SH EXAMPLES
A key, a repository, and a writer key for a host that backs up nightly
but can read none of its backups:
.PP
.nf
.RS
strongroom keygen \-\-out ~/.strongroom.key
export STRONGROOM_KEY=~/.strongroom.key STRONGROOM_REPO=/srv/backup
strongroom init
strongroom key export\-writer \-\-host web1 \-\-out web1.key \-\-no\-passphrase
# on web1, nightly:
STRONGROOM_KEY=web1.key strongroom backup /etc /var/lib/postgresql
.RE
.fi
.PP
Mount every snapshot and copy a file out of last Tuesday's:
.PP
.nf
.RS
strongroom mount /mnt/backup &
ls /mnt/backup/hosts/web1/
cp \-a /mnt/backup/snapshots/2026\-03\-10T02:00:00Z/etc/nginx ./nginx\-then
umount /mnt/backup
.RE
.fi
.PP
Restore a directory, and check everything:
.PP
.nf
.RS
strongroom restore latest:/etc \-\-target /tmp/restore
strongroom check \-\-read\-data
.RE
.fi
.PP
Daily backups kept 90 days, monthly ones 6 years, and a second copy in
another region:
.PP
.nf
.RS
strongroom forget \-\-keep\-within\-daily 90d \-\-keep\-within\-monthly 6y \-\-prune
strongroom copy \-\-to s3:https://s3.example/backups/web
.RE
.fi
"#;
