//! `--device cpu|wgpu:N|wgpu:KIND:N`: the one place where a burn device is chosen, and
//! the list of graphics adapters `rankprune devices` prints.

use crate::{Error, Result};
use burn::tensor::Device;

/// A graphics adapter as wgpu reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adapter {
    /// Its place in [`adapters`]: `wgpu:INDEX` selects it.
    pub index: usize,
    pub name: String,
    /// `discrete`, `integrated`, `virtual`, `cpu` (a software rasteriser such as
    /// lavapipe) or `other`.
    pub kind: &'static str,
    /// Its place among the adapters of its kind: `wgpu:KIND:INDEX` selects it.
    pub kind_index: usize,
    pub backend: String,
    pub driver: String,
}

/// Parses a device name: `cpu` (burn-flex) or, with the `wgpu` feature, `wgpu:N` (the
/// N-th adapter `rankprune devices` lists) or `wgpu:KIND:N` (the N-th adapter of a kind:
/// discrete, integrated, virtual, cpu).
pub fn parse_device(name: &str) -> Result<Device> {
    let bad = || {
        Error::BadInput(format!(
            "--device {name:?}: allowed values are cpu, wgpu:N and wgpu:KIND:N \
             (KIND: discrete, integrated, virtual, cpu)"
        ))
    };
    if matches!(name, "cpu" | "flex") {
        return Ok(Device::flex());
    }
    let Some(rest) = name.strip_prefix("wgpu:") else {
        return Err(bad());
    };
    let selector = match rest.split_once(':') {
        None => Selector::Index(rest.parse().map_err(|_| bad())?),
        Some((kind, n)) => {
            let kind = KINDS.iter().find(|k| **k == kind).ok_or_else(bad)?;
            Selector::Kind(kind, n.parse().map_err(|_| bad())?)
        }
    };
    wgpu_device(name, selector)
}

/// The kinds a `wgpu:KIND:N` device may name, as [`Adapter::kind`] spells them.
const KINDS: [&str; 5] = ["discrete", "integrated", "virtual", "cpu", "other"];

// Read by the wgpu build (and the tests) only.
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
enum Selector {
    Index(usize),
    Kind(&'static str, usize),
}

/// The adapter `selector` names among `list`, or an error that lists them.
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
fn choose<'a>(name: &str, selector: &Selector, list: &'a [Adapter]) -> Result<&'a Adapter> {
    let found = list.iter().find(|a| match *selector {
        Selector::Index(i) => a.index == i,
        Selector::Kind(k, i) => a.kind == k && a.kind_index == i,
    });
    found.ok_or_else(|| {
        let have = if list.is_empty() {
            "none".to_string()
        } else {
            list.iter()
                .map(|a| format!("wgpu:{} = wgpu:{}:{} ({})", a.index, a.kind, a.kind_index, a.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Error::BadInput(format!(
            "--device {name}: no such adapter on this machine (adapters: {have}; `rankprune devices` lists them)"
        ))
    })
}

/// Numbers `infos` (name, kind, backend, driver) as [`adapters`] does.
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
fn numbered(infos: Vec<(String, &'static str, String, String)>) -> Vec<Adapter> {
    let mut seen: Vec<&'static str> = Vec::new();
    infos
        .into_iter()
        .enumerate()
        .map(|(index, (name, kind, backend, driver))| {
            let kind_index = seen.iter().filter(|k| **k == kind).count();
            seen.push(kind);
            Adapter {
                index,
                name,
                kind,
                kind_index,
                backend,
                driver,
            }
        })
        .collect()
}

/// The adapters a wgpu device can be chosen from: those of the first graphics API that
/// has any (Vulkan, then Metal, DirectX 12, OpenGL), the API burn's wgpu backend picks.
#[cfg(feature = "wgpu")]
pub fn adapters() -> Vec<Adapter> {
    use wgpu::{Backend, DeviceType};
    let kind = |t: DeviceType| match t {
        DeviceType::DiscreteGpu => "discrete",
        DeviceType::IntegratedGpu => "integrated",
        DeviceType::VirtualGpu => "virtual",
        DeviceType::Cpu => "cpu",
        DeviceType::Other => "other",
    };
    for api in [Backend::Vulkan, Backend::Metal, Backend::Dx12, Backend::Gl] {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: api.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let found = pollster::block_on(instance.enumerate_adapters(api.into()));
        if found.is_empty() {
            continue;
        }
        return numbered(
            found
                .iter()
                .map(|a| {
                    let i = a.get_info();
                    (
                        i.name,
                        kind(i.device_type),
                        format!("{:?}", i.backend),
                        i.driver,
                    )
                })
                .collect(),
        );
    }
    Vec::new()
}

/// Without the `wgpu` feature there is no adapter to choose.
#[cfg(not(feature = "wgpu"))]
pub fn adapters() -> Vec<Adapter> {
    Vec::new()
}

#[cfg(feature = "wgpu")]
fn wgpu_device(name: &str, selector: Selector) -> Result<Device> {
    use burn::tensor::DeviceKind;
    let list = adapters();
    let a = choose(name, &selector, &list)?;
    let kind = match a.kind {
        "discrete" => DeviceKind::DiscreteGpu(a.kind_index),
        "integrated" => DeviceKind::IntegratedGpu(a.kind_index),
        "virtual" => DeviceKind::VirtualGpu(a.kind_index),
        "cpu" if a.kind_index == 0 => DeviceKind::Cpu,
        _ => {
            return Err(Error::BadInput(format!(
                "--device {name}: adapter {} is of a kind burn cannot select ({})",
                a.name, a.kind
            )));
        }
    };
    tracing::info!(adapter = %a.name, backend = %a.backend, "wgpu device");
    Ok(Device::wgpu(kind))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_name: &str, _selector: Selector) -> Result<Device> {
    Err(Error::BadInput(
        "--device wgpu:N needs a build with `--features wgpu` (cargo build --release --features wgpu)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_junk() {
        assert!(parse_device("cpu").is_ok());
        for bad in ["gpu", "wgpu:x", "wgpu:gpu:0", "wgpu:cpu:x", "wgpu:"] {
            let e = parse_device(bad).err().unwrap().to_string();
            assert!(e.contains("allowed values"), "{bad}: {e}");
        }
    }

    fn machine() -> Vec<Adapter> {
        let a = |name: &str, kind| (name.to_string(), kind, "Vulkan".to_string(), String::new());
        numbered(vec![
            a("RTX A", "discrete"),
            a("llvmpipe", "cpu"),
            a("RTX B", "discrete"),
        ])
    }

    #[test]
    fn adapters_are_chosen_by_place_or_by_kind_and_place() {
        let list = machine();
        assert_eq!(list[2].kind_index, 1, "the second discrete GPU");
        let pick = |s: Selector| choose("x", &s, &list).map(|a| a.name.clone()).ok();
        assert_eq!(pick(Selector::Index(1)).as_deref(), Some("llvmpipe"));
        assert_eq!(
            pick(Selector::Kind("discrete", 1)).as_deref(),
            Some("RTX B")
        );
        assert_eq!(pick(Selector::Kind("cpu", 0)).as_deref(), Some("llvmpipe"));
        assert_eq!(pick(Selector::Kind("integrated", 0)), None);
        let e = choose("wgpu:7", &Selector::Index(7), &list).unwrap_err();
        assert!(matches!(e, Error::BadInput(_)));
        let e = e.to_string();
        assert!(e.contains("wgpu:1 = wgpu:cpu:0 (llvmpipe)"), "{e}");
    }
}
