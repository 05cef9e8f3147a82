use clap::Parser;
use ferry_host::config::{HostArgs, LogFormat};
use std::process::ExitCode;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

fn main() -> ExitCode {
    let args = HostArgs::parse();
    let print = args.print_config;
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-host: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if print {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry-host: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ferry_host::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ferry-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}
