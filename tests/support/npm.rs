//! npm packages for the tests that drive Node.js clients, each installed once per machine
//! into a directory of its own under the temporary directory.

use std::{path::PathBuf, process::Command, sync::Mutex};

/// The directory where `name@version` is installed, installing Node.js and npm (Debian
/// packages) and then the package the first time; `marker` is a file of the package,
/// relative to its folder in `node_modules`, whose presence shows a finished install.
pub fn package(name: &str, version: &str, marker: &str) -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("starling-{name}-{version}"));
    let installed = dir.join("node_modules").join(name).join(marker);
    if !installed.exists() {
        for (program, package) in [("node", "nodejs"), ("npm", "npm")] {
            let found = Command::new(program).arg("--version").output().is_ok();
            if !found {
                assert!(
                    super::install_debian_package(package),
                    "{program} not found: install the Debian package `{package}`"
                );
            }
        }
        std::fs::create_dir_all(&dir).expect("create the package directory");
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .arg(format!("{name}@{version}"))
            .current_dir(&dir)
            .status()
            .expect("run npm");
        assert!(
            status.success() && installed.exists(),
            "npm install {name}@{version} failed"
        );
    }
    dir
}
