//! Which agent serves a node's devices, and which kubelet takes them: the `agent:` and `kubelet:`
//! choices of a scenario (scenario-wide or per node), and the `--agent`/`--kubelet` overrides.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

/// The placeholders a command's argv and env may use, and what each becomes.
pub const PLACEHOLDERS: [(&str, &str); 4] = [
    (
        "{config}",
        "the node's KubeVirt configuration file (replaced atomically on `configure`)",
    ),
    ("{node}", "the node name"),
    (
        "{labels}",
        "a file of the node's labels, one `key=value` a line",
    ),
    (
        "{dir}",
        "the directory of the scenario file (for programs kept beside it)",
    ),
];

/// `agent:`: `hostdev` (in process), `kubevirt` (KubeVirt's own plugins, built from upstream),
/// or any executable run in the node's namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AgentChoice {
    #[default]
    Hostdev,
    Kubevirt,
    Command(AgentCommand),
}

/// An external agent: `command[0]` is looked up on PATH; placeholders are expanded in both.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCommand {
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl AgentChoice {
    /// `hostdev`, `kubevirt`, or a command line split like a shell's (`--agent 'my-plugin --x {node}'`).
    pub fn parse_flag(text: &str) -> Result<AgentChoice, String> {
        match text.trim() {
            "hostdev" => Ok(AgentChoice::Hostdev),
            "kubevirt" => Ok(AgentChoice::Kubevirt),
            line => {
                let words = shlex::split(line)
                    .ok_or_else(|| format!("--agent {text:?}: unbalanced quotes"))?;
                if words.is_empty() {
                    return Err("--agent: give hostdev, kubevirt or a command line".into());
                }
                Ok(AgentChoice::Command(AgentCommand {
                    command: words,
                    env: BTreeMap::new(),
                }))
            }
        }
    }

    /// Expands `{dir}` (the scenario file's directory, made absolute) in a command's argv and env.
    pub fn with_dir(self, dir: &std::path::Path) -> AgentChoice {
        let AgentChoice::Command(mut c) = self else {
            return self;
        };
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let dir = abs.to_string_lossy();
        for a in c.command.iter_mut().chain(c.env.values_mut()) {
            *a = a.replace("{dir}", &dir);
        }
        AgentChoice::Command(c)
    }

    /// A short name for reports and test names.
    pub fn label(&self) -> String {
        match self {
            AgentChoice::Hostdev => "hostdev".into(),
            AgentChoice::Kubevirt => "kubevirt".into(),
            AgentChoice::Command(c) => c.command.first().cloned().unwrap_or_default(),
        }
    }
}

impl<'de> Deserialize<'de> for AgentChoice {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AgentChoice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`hostdev`, `kubevirt`, or {command: [PROGRAM, ARGS...], env: {...}}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AgentChoice, E> {
                match v {
                    "hostdev" => Ok(AgentChoice::Hostdev),
                    "kubevirt" => Ok(AgentChoice::Kubevirt),
                    other => Err(E::custom(format!(
                        "unknown agent {other:?}: expected `hostdev`, `kubevirt`, or {{command: [...]}}"
                    ))),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<AgentChoice, M::Error> {
                let c = AgentCommand::deserialize(de::value::MapAccessDeserializer::new(m))?;
                if c.command.is_empty() {
                    return Err(de::Error::custom(
                        "agent command: give at least the program",
                    ));
                }
                Ok(AgentChoice::Command(c))
            }
        }
        d.deserialize_any(V)
    }
}

/// `kubelet:`: the project's fake kubelet, or the kubelet's own device manager built from upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KubeletChoice {
    #[default]
    Fake,
    Upstream,
}

impl KubeletChoice {
    pub fn parse_flag(text: &str) -> Result<KubeletChoice, String> {
        match text {
            "fake" => Ok(KubeletChoice::Fake),
            "upstream" => Ok(KubeletChoice::Upstream),
            other => Err(format!("--kubelet {other:?}: expected fake or upstream")),
        }
    }
}

/// How `restart: {component: agent}` stops the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum StopSignal {
    /// SIGTERM, then SIGKILL after the grace period (as the kubelet stops a container).
    #[default]
    #[serde(rename = "TERM")]
    Term,
    /// SIGKILL at once: the agent dies mid-flight.
    #[serde(rename = "KILL")]
    Kill,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_names_and_command_lines() {
        assert_eq!(AgentChoice::parse_flag("hostdev"), Ok(AgentChoice::Hostdev));
        assert_eq!(
            AgentChoice::parse_flag("kubevirt"),
            Ok(AgentChoice::Kubevirt)
        );
        assert_eq!(
            AgentChoice::parse_flag("my-plugin --config '{config}' --name {node}"),
            Ok(AgentChoice::Command(AgentCommand {
                command: vec![
                    "my-plugin".into(),
                    "--config".into(),
                    "{config}".into(),
                    "--name".into(),
                    "{node}".into()
                ],
                env: BTreeMap::new(),
            }))
        );
        assert!(AgentChoice::parse_flag("x 'unbalanced").is_err());
        assert!(AgentChoice::parse_flag("  ").is_err());
        assert_eq!(
            KubeletChoice::parse_flag("upstream"),
            Ok(KubeletChoice::Upstream)
        );
        assert!(KubeletChoice::parse_flag("real").is_err());
    }

    #[test]
    fn yaml_takes_a_name_or_a_command() {
        let parse = |y: &str| serde_saphyr::from_str::<AgentChoice>(y);
        assert_eq!(parse("hostdev").expect("name"), AgentChoice::Hostdev);
        let c = parse("{command: [a, '{node}'], env: {X: '{labels}'}}").expect("command");
        assert_eq!(
            c,
            AgentChoice::Command(AgentCommand {
                command: vec!["a".into(), "{node}".into()],
                env: [("X".to_owned(), "{labels}".to_owned())].into(),
            })
        );
        let e = parse("hostdevv").expect_err("unknown name").to_string();
        assert!(e.contains("unknown agent \"hostdevv\""), "{e}");
        let e = parse("{command: []}").expect_err("empty").to_string();
        assert!(e.contains("at least the program"), "{e}");
        let e = parse("{comand: [a]}").expect_err("typo").to_string();
        assert!(e.contains("comand"), "{e}");
    }
}
