//! The few fields of a Kubernetes DaemonSet the smoke test reads, named
//! as the API names them.
use serde::Deserialize;

#[derive(Deserialize)]
pub struct DaemonSet {
    pub spec: Spec,
}

#[derive(Deserialize)]
pub struct Spec {
    pub template: Template,
}

#[derive(Deserialize)]
pub struct Template {
    pub spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub host_network: bool,
    #[serde(default, rename = "hostPID")]
    pub host_pid: bool,
    #[serde(default)]
    pub security_context: SecurityContext,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    pub containers: Vec<Container>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub fs_group: Option<u32>,
    pub privileged: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub read_only_root_filesystem: Option<bool>,
    pub capabilities: Option<Capabilities>,
    pub seccomp_profile: Option<Profile>,
    pub app_armor_profile: Option<Profile>,
}

#[derive(Deserialize)]
pub struct Capabilities {
    pub add: Option<Vec<String>>,
    pub drop: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub struct Profile {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub host_path: Option<HostPath>,
    pub secret: Option<Secret>,
}

#[derive(Deserialize)]
pub struct HostPath {
    pub path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub secret_name: String,
    /// As written: Kubernetes reads `0440` as octal.
    #[serde(default, deserialize_with = "scalar_text")]
    pub default_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub security_context: SecurityContext,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Deserialize, Default)]
pub struct Resources {
    pub limits: Option<Limits>,
}

#[derive(Deserialize)]
pub struct Limits {
    pub memory: Option<String>,
    pub cpu: Option<String>,
}

/// A scalar's text, whatever YAML would make of it.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_norway::Value::deserialize(d)?;
    Ok(match v {
        serde_norway::Value::String(s) => Some(s),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}
