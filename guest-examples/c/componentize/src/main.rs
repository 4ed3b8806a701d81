//! The two steps of a C scenario build that need the component-model crates:
//!
//!   sessionbox-c-tool bindgen <wit dir> <world> <out dir>
//!       C bindings for the world, as `wit-bindgen c` (0.63) writes them:
//!       <world>.h, <world>.c and <world>_component_type.o, with C names
//!       that leave out package versions (see `unversioned_names`).
//!   sessionbox-c-tool component <core.wasm> <out.wasm>
//!       Turns a core module built with `-mexec-model=reactor` into a
//!       component, adapting its WASI preview 1 imports with the reactor
//!       adapter (as `wasm-tools component new --adapt`).
//!
//! A tool crate instead of `cargo install wit-bindgen-cli wasm-tools`: it
//! builds in a fraction of the time and shares the crates' versions with
//! its Cargo.lock.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::{Resolve, WorldId, WorldKey};
use wit_component::ComponentEncoder;

fn bindgen(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading WIT from {}", wit.display()))?;
    let world = resolve.select_world(&[pkg], Some(world))?;
    let opts = wit_bindgen_c::Opts {
        rename: unversioned_names(&resolve, world)?,
        ..Default::default()
    };
    let mut files = Files::default();
    opts.build().generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out)?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `wit-bindgen c --rename` pairs that name each interface of the world
/// `<namespace>_<package>_<interface>`, without its package's version.
///
/// wit-bindgen-c puts the version in every C name of a package once the
/// resolve holds two versions of it (`sessionbox_scenario_0_2_0_calls_...`),
/// as `wit/scenario.wit` (0.3.0) does by including 0.2.0. A world still takes
/// each interface from one version, so the short names are unambiguous, and
/// scenarios keep the names they had before 0.3.0.
fn unversioned_names(resolve: &Resolve, world: WorldId) -> Result<Vec<(String, String)>> {
    let world = &resolve.worlds[world];
    let mut names: HashMap<String, String> = HashMap::new();
    for key in world.imports.keys().chain(world.exports.keys()) {
        let WorldKey::Interface(id) = key else {
            continue;
        };
        // Interfaces named by a world key are always named and in a package.
        let interface = &resolve.interfaces[*id];
        let package = &resolve.packages[interface.package.unwrap()].name;
        let name = format!(
            "{}_{}_{}",
            package.namespace,
            package.name,
            interface.name.as_ref().unwrap()
        )
        .to_lowercase()
        .replace('-', "_");
        let from = resolve.name_world_key(key);
        match names.get(&name) {
            Some(other) if *other != from => {
                bail!("{other} and {from} would both be `{name}` in C")
            }
            _ => names.insert(name, from),
        };
    }
    Ok(names.into_iter().map(|(name, from)| (from, name)).collect())
}

fn component(core: &Path, out: &Path) -> Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .with_context(|| format!("componentizing {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["bindgen", wit, world, out] => bindgen(wit.as_ref(), world, out.as_ref()),
        ["component", core, out] => component(core.as_ref(), out.as_ref()),
        _ => bail!(
            "usage: sessionbox-c-tool bindgen <wit dir> <world> <out dir>\n       \
             sessionbox-c-tool component <core.wasm> <out.wasm>"
        ),
    }
}
