//! The session's host ports: all bound on 127.0.0.1 before anything else is
//! created (the explicit `--port` and `--forward` ones first, so an automatic
//! choice never takes a port asked for), and served through the proxy into
//! the namespace once it exists.

use crate::ctx::{Config, Ctx};
use crate::proxy::{self, SocketFactory};
use crate::state::Session;
use dozlab_core::failure::Failure;
use dozlab_core::netconfig::PortForward;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// Host ports bound before anything else is created.
pub(crate) struct Listeners {
    pub(crate) terminal: TcpListener,
    pub(crate) ssh: TcpListener,
    pub(crate) docker: TcpListener,
    pub(crate) vscode: Option<TcpListener>,
    pub(crate) forwards: Vec<(PortForward, TcpListener)>,
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// Binds every port `cfg` asks for and records them in `s`.
pub(crate) fn bind(cfg: &Config, s: &mut Session) -> Result<Listeners, Failure> {
    let explicit_terminal = match cfg.port {
        Some(p) => Some(proxy::bind_exact(p).map_err(Failure::usage)?),
        None => None,
    };
    let mut forwards = Vec::new();
    for f in &cfg.forwards {
        let l = proxy::bind_exact(f.host).map_err(|e| match e {
            proxy::PortError::InUse(port) => {
                Failure::usage(proxy::PortError::ForwardInUse { port })
            }
            e => e.into(),
        })?;
        forwards.push((*f, l));
    }
    let terminal = match explicit_terminal {
        Some(l) => l,
        None => proxy::bind_from(8081)?,
    };
    let vscode = match (cfg.vscode, crate::checks::find_program("code-server")) {
        (true, Some(_)) => Some(proxy::bind_from(8080)?),
        (true, None) => {
            s.notes.push(
                "VS Code not started: --vscode needs `code-server` on PATH and none was found \
                 (install code-server, then run `dozlab up --vscode` again)"
                    .into(),
            );
            None
        }
        (false, _) => None,
    };
    let l = Listeners {
        ssh: proxy::bind_from(2222)?,
        docker: proxy::bind_from(2375)?,
        terminal,
        vscode,
        forwards,
    };
    s.ports.terminal = port_of(&l.terminal);
    s.ports.ssh = Some(port_of(&l.ssh));
    s.ports.docker = Some(port_of(&l.docker));
    s.ports.vscode = l.vscode.as_ref().map(port_of);
    s.ports.forwards = cfg.forwards.iter().map(|f| f.to_string()).collect();
    Ok(l)
}

/// Starts serving the host ports into the namespace.
pub(crate) fn publish(ctx: &Ctx<'_>, factory: &SocketFactory, l: Listeners) {
    let vm = ctx.vm_ip();
    let serve = |listener: TcpListener, target: SocketAddrV4| {
        tokio::spawn(proxy::serve(listener, factory.clone(), target));
    };
    serve(l.terminal, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));
    serve(l.ssh, SocketAddrV4::new(vm, 22));
    if ctx.s.ports.docker.is_some() {
        serve(l.docker, SocketAddrV4::new(vm, 2375));
    }
    if let Some(v) = l.vscode {
        serve(v, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    }
    for (f, listener) in l.forwards {
        serve(listener, SocketAddrV4::new(vm, f.vm));
    }
}
