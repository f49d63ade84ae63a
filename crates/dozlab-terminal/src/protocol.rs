//! The WebSocket wire protocol between the page and the server.
//!
//! Binary frames carry raw terminal bytes (keyboard input from the page,
//! shell output from the server). Text frames carry one JSON object each,
//! tagged by `type`. The full description is in `docs/terminal.md`.

use serde::{Deserialize, Serialize};

/// Control messages the page sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMsg {
    /// The terminal's size changed.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Keep-alive; the server answers `pong`.
    Ping,
    /// End the shell (the tab was closed).
    Close,
}

/// Where the connection to the VM stands, shown in the page's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The VM has not answered yet (booting, or files not written yet).
    VmStarting,
    /// Connecting to the VM's SSH server.
    Connecting,
    /// The shell is live.
    Connected,
    /// Something is wrong that a retry may or may not fix (e.g. host key mismatch).
    Error,
}

/// Control messages the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg {
    /// Connection state for the status line.
    Status {
        /// The state.
        state: State,
        /// A human-readable detail.
        message: String,
    },
    /// The socket is attached to a shell; binary frames that follow carry the
    /// shell's output starting at byte `offset`.
    Attached {
        /// The shell's id, used to re-attach (`/ws?shell=ID&offset=N`).
        shell: String,
        /// Offset of the first output byte that follows.
        offset: u64,
        /// Bytes the client asked for that were no longer buffered.
        skipped: u64,
    },
    /// The shell ended; the server closes the socket after this.
    Exit {
        /// The exit status when the shell reported one.
        code: Option<u32>,
        /// Why: "exited", "idle timeout", "grace period over", ...
        reason: String,
    },
    /// A request was refused; the server closes the socket after this.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Answer to `ping`.
    Pong,
}

impl ServerMsg {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// WebSocket close codes the server uses.
pub mod close {
    /// Normal closure (the shell exited).
    pub const NORMAL: u16 = 1000;
    /// A frame larger than `--max-frame-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Policy violation (malformed control message).
    pub const POLICY: u16 = 1008;
    /// Too many shells open (`--max-shells`): try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Another socket attached to the same shell (the page stops reconnecting).
    pub const TAKEN_OVER: u16 = 4000;
    /// The login session ended (logout): the page goes to the login page.
    pub const LOGGED_OUT: u16 = 4001;
    /// No shell with the requested id.
    pub const NO_SUCH_SHELL: u16 = 4404;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let m: ClientMsg =
            serde_json::from_str(r#"{"type":"resize","cols":80,"rows":24}"#).unwrap();
        assert_eq!(m, ClientMsg::Resize { cols: 80, rows: 24 });
        let s = ServerMsg::Status {
            state: State::VmStarting,
            message: "x".into(),
        };
        assert_eq!(
            s.to_json(),
            r#"{"type":"status","state":"vm-starting","message":"x"}"#
        );
        let e = ServerMsg::Exit {
            code: Some(3),
            reason: "exited".into(),
        };
        assert_eq!(e.to_json(), r#"{"type":"exit","code":3,"reason":"exited"}"#);
    }
}
