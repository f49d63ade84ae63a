//! Up-front checks: privileges and host tools, each missing tool named with
//! the Debian package that provides it, before anything is created.

/// A host program a session needs.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
    pub why: &'static str,
}

/// What every session needs on the host.
pub const TOOLS: &[Tool] = &[
    Tool {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
        why: "boots the VM",
    },
    Tool {
        program: "e2fsck",
        package: "e2fsprogs",
        why: "checks the session's disk",
    },
    Tool {
        program: "resize2fs",
        package: "e2fsprogs",
        why: "grows the session's disk",
    },
    Tool {
        program: "debugfs",
        package: "e2fsprogs",
        why: "injects the session's SSH keys",
    },
    Tool {
        program: "nft",
        package: "nftables",
        why: "NAT for the VM",
    },
];

/// What is missing on this host.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "`dozlab up` must run as root: it creates a network namespace, a veth pair, a tap device and nftables rules for the session.\nRun it with sudo: sudo {cmd}"
    )]
    NotRoot { cmd: String },
    #[error("missing host tools:\n{list}\nInstall them with: sudo apt-get install {packages}")]
    MissingTools { list: String, packages: String },
}

/// Finds a program on `PATH` or in the sbin directories (root's tools).
pub use dozlab_core::exe::which_or_sbin as find_program;

/// Fails unless running as root, with the command to run instead.
pub fn require_root() -> Result<(), CheckError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let cmd: Vec<String> = std::env::args().collect();
    Err(CheckError::NotRoot { cmd: cmd.join(" ") })
}

/// Fails when any of `tools` is missing, naming each and its package.
pub fn require_tools(tools: &[Tool]) -> Result<(), CheckError> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|t| find_program(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|t| format!("  {} ({}; Debian package {})", t.program, t.why, t.package))
        .collect::<Vec<_>>()
        .join("\n");
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    Err(CheckError::MissingTools {
        list,
        packages: packages.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let t = [Tool {
            program: "dozlab-no-such-tool",
            package: "dozlab-pkg",
            why: "testing",
        }];
        let e = require_tools(&t).unwrap_err().to_string();
        assert!(e.contains("dozlab-no-such-tool"), "{e}");
        assert!(e.contains("apt-get install dozlab-pkg"), "{e}");
        assert!(
            require_tools(&[Tool {
                program: "sh",
                package: "dash",
                why: "x"
            }])
            .is_ok()
        );
    }
}
