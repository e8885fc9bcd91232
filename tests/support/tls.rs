//! Certificates for TLS tests, made with the `openssl` command: a CA, a server certificate
//! for the name `localhost` only (so that reaching the server as 127.0.0.1 is a wrong name),
//! and a client certificate, each with its key, in a directory of their own.

use std::{path::Path, process::Command};

use super::TempDir;

/// A directory holding `ca.crt`, `server.crt`, `server.key`, `client.crt` and `client.key`.
pub struct Certificates {
    dir: TempDir,
}

impl Certificates {
    /// Makes a CA and the certificates it signs.
    pub fn new() -> Self {
        if !Path::new("/usr/bin/openssl").exists() {
            super::install_debian_package("openssl");
        }
        let dir = TempDir::new("certificates");
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (the Debian package openssl)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=Starling test CA",
            ],
        ]
        .concat());
        for (name, subject, extension) in [
            ("server", "/CN=localhost", "subjectAltName=DNS:localhost"),
            ("client", "/CN=starling", "extendedKeyUsage=clientAuth"),
        ] {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            run(&[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", subject],
            ]
            .concat());
            std::fs::write(dir.path().join(format!("{name}.ext")), extension)
                .expect("write extension");
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One of its files.
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}
