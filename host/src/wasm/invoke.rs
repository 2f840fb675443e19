//! Calling the entrypoint: `_start` / `wasi:cli/run`, or a named export
//! with arguments parsed from the command line and results printed.
use super::error::{instantiate_error, RunError};
use wasmtime::component::{Component, Linker as ComponentLinker, Type, Val as CVal};
use wasmtime::{Instance, Store, Val, ValType};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{I32Exit, WasiView};

type CallResult = Result<wasmtime::Result<()>, RunError>;

/// Runs a core module's `_start`, or `export` with `args[1..]` as parameters.
pub(super) async fn core_entry<T: Send + 'static>(store: &mut Store<T>, instance: &Instance, name: &str, export: Option<&str>, args: &[String]) -> CallResult {
    let Some(export) = export else {
        let Some(start) = instance.get_func(&mut *store, "_start") else {
            return Err(no_export(store, instance, name, "_start"));
        };
        return Ok(start.call_async(&mut *store, &[], &mut []).await);
    };
    // Reactor modules initialise their runtime before any other export.
    if let Some(init) = instance.get_func(&mut *store, "_initialize") {
        if let Err(e) = init.call_async(&mut *store, &[], &mut []).await {
            return Ok(Err(e));
        }
    }
    let func = instance.get_func(&mut *store, export).ok_or_else(|| no_export(store, instance, name, export))?;
    let ty = func.ty(&*store);
    let params = parse_params(name, export, args, ty.params().map(|t| (t.to_string(), t)), parse_core)?;
    let mut results = vec![Val::I32(0); ty.results().len()];
    let r = func.call_async(&mut *store, &params, &mut results).await;
    print_results(&r, &results, show_core);
    Ok(r)
}

/// Parses `args[1..]` as the export's parameters, one per declared type.
fn parse_params<T, V>(
    name: &str,
    export: &str,
    args: &[String],
    types: impl ExactSizeIterator<Item = (String, T)>,
    parse: impl Fn(&T, &str) -> Option<V>,
) -> Result<Vec<V>, RunError> {
    let invoke_err = |reason: String| RunError::Invoke { name: name.to_string(), export: export.to_string(), reason };
    let given = args.get(1..).unwrap_or_default();
    if given.len() != types.len() {
        return Err(invoke_err(format!("it takes {} argument(s), {} given", types.len(), given.len())));
    }
    types.zip(given).map(|((what, t), a)| parse(&t, a).ok_or_else(|| invoke_err(format!("argument {a:?} does not fit {what}")))).collect()
}

fn print_results<V>(r: &wasmtime::Result<()>, results: &[V], show: impl Fn(&V) -> String) {
    if r.is_ok() {
        for v in results {
            println!("{}", show(v));
        }
    }
}

fn no_export<T>(store: &mut Store<T>, instance: &Instance, name: &str, export: &str) -> RunError {
    let funcs: Vec<String> = instance.exports(&mut *store).filter(|e| e.clone().into_func().is_some()).map(|e| e.name().to_string()).collect();
    let hint = if funcs.is_empty() { "it exports no functions".to_string() } else { format!("call one of [{}] as {name}#NAME", funcs.join(", ")) };
    RunError::NoExport { name: name.to_string(), export: export.to_string(), hint }
}

fn parse_core(t: &ValType, a: &str) -> Option<Val> {
    Some(match t {
        ValType::I32 => Val::I32(a.parse::<i32>().or_else(|_| a.parse::<u32>().map(|u| u as i32)).ok()?),
        ValType::I64 => Val::I64(a.parse::<i64>().or_else(|_| a.parse::<u64>().map(|u| u as i64)).ok()?),
        ValType::F32 => Val::F32(a.parse::<f32>().ok()?.to_bits()),
        ValType::F64 => Val::F64(a.parse::<f64>().ok()?.to_bits()),
        _ => return None,
    })
}

fn show_core(v: &Val) -> String {
    match v {
        Val::I32(x) => x.to_string(),
        Val::I64(x) => x.to_string(),
        Val::F32(b) => f32::from_bits(*b).to_string(),
        Val::F64(b) => f64::from_bits(*b).to_string(),
        other => format!("{other:?}"),
    }
}

/// Runs a component's `wasi:cli/run`, or a top-level function export.
pub(super) async fn component_entry<T: WasiView + Send + 'static>(
    store: &mut Store<T>,
    linker: &ComponentLinker<T>,
    component: &Component,
    name: &str,
    export: Option<&str>,
    args: &[String],
) -> CallResult {
    let engine = store.engine().clone();
    let exports: Vec<String> = component.component_type().exports(&engine).map(|(n, _)| n.to_string()).collect();
    let Some(export) = export else {
        if !exports.iter().any(|e| e.starts_with("wasi:cli/run@")) {
            let hint = if exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler@")) {
                "it is an HTTP handler (wasi:http/incoming-handler); serve it instead of running it".to_string()
            } else if exports.is_empty() {
                "it exports nothing".to_string()
            } else {
                format!("it exports [{}]; call a function as {name}#NAME", exports.join(", "))
            };
            return Err(RunError::NoExport { name: name.into(), export: "wasi:cli/run".into(), hint });
        }
        let cmd = Command::instantiate_async(&mut *store, component, linker).await.map_err(|e| instantiate_error(name, e))?;
        return Ok(match cmd.wasi_cli_run().call_run(&mut *store).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err(wasmtime::Error::new(I32Exit(1))),
            Err(e) => Err(e),
        });
    };
    let instance = linker.instantiate_async(&mut *store, component).await.map_err(|e| instantiate_error(name, e))?;
    let func = instance.get_func(&mut *store, export).ok_or_else(|| RunError::NoExport {
        name: name.into(),
        export: export.into(),
        hint: format!("top-level exports are [{}]", exports.join(", ")),
    })?;
    let ty = func.ty(&*store);
    let types = ty.params().map(|(pname, t)| (format!("{pname}: {t:?}"), t));
    let params = parse_params(name, export, args, types, parse_component)?;
    let mut results = vec![CVal::Bool(false); ty.results().len()];
    let r = func.call_async(&mut *store, &params, &mut results).await;
    print_results(&r, &results, show_component);
    Ok(r)
}

fn parse_component(t: &Type, a: &str) -> Option<CVal> {
    Some(match t {
        Type::Bool => CVal::Bool(a.parse().ok()?),
        Type::S8 => CVal::S8(a.parse().ok()?),
        Type::U8 => CVal::U8(a.parse().ok()?),
        Type::S16 => CVal::S16(a.parse().ok()?),
        Type::U16 => CVal::U16(a.parse().ok()?),
        Type::S32 => CVal::S32(a.parse().ok()?),
        Type::U32 => CVal::U32(a.parse().ok()?),
        Type::S64 => CVal::S64(a.parse().ok()?),
        Type::U64 => CVal::U64(a.parse().ok()?),
        Type::Float32 => CVal::Float32(a.parse().ok()?),
        Type::Float64 => CVal::Float64(a.parse().ok()?),
        Type::Char => {
            let mut cs = a.chars();
            let c = cs.next()?;
            cs.next().is_none().then_some(CVal::Char(c))?
        }
        Type::String => CVal::String(a.to_string()),
        _ => return None,
    })
}

fn show_component(v: &CVal) -> String {
    match v {
        CVal::Bool(x) => x.to_string(),
        CVal::S8(x) => x.to_string(),
        CVal::U8(x) => x.to_string(),
        CVal::S16(x) => x.to_string(),
        CVal::U16(x) => x.to_string(),
        CVal::S32(x) => x.to_string(),
        CVal::U32(x) => x.to_string(),
        CVal::S64(x) => x.to_string(),
        CVal::U64(x) => x.to_string(),
        CVal::Float32(x) => x.to_string(),
        CVal::Float64(x) => x.to_string(),
        CVal::Char(x) => x.to_string(),
        CVal::String(x) => x.clone(),
        other => format!("{other:?}"),
    }
}
