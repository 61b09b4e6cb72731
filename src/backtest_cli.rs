//! `keel backtest` and `keel data synth`.
//!
//! On a terminal (and without `--json`) `keel backtest` shows a progress bar on stderr: bytes of
//! the file read, with an estimate of the time left.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use keel_actors::backtest::input::{InputError, TradeReader, synth, write_csv};
use keel_actors::backtest::{BacktestConfig, Outcome, Report, run};
use keel_actors::bot::Bracket;
use keel_core::market::Symbol;
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_venues::sim::Instrument;
use rust_decimal::Decimal;

use crate::cli::{BacktestArgs, DataCommand};

fn symbol(raw: &str) -> anyhow::Result<Symbol> {
    Symbol::parse(raw)
        .with_context(|| format!("`{raw}` is not a symbol (2 to 20 letters and digits)"))
}

/// Runs a backtest and prints its report.
///
/// # Errors
/// Bad arguments or parameters, an unreadable file or row, or an output that cannot be written.
pub fn backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    let symbol = symbol(&args.symbol)?;
    let params: serde_json::Value =
        serde_json::from_str(&args.params).context("--params must be a JSON object")?;
    let bracket = match (args.bracket_tp, args.bracket_sl) {
        (Some(take_profit_pct), Some(stop_loss_pct)) => {
            let positive = |v: Decimal| v > Decimal::ZERO && v < Decimal::ONE_HUNDRED;
            anyhow::ensure!(
                positive(take_profit_pct) && positive(stop_loss_pct),
                "--bracket-tp and --bracket-sl are percents between 0 and 100"
            );
            Some(Bracket { take_profit_pct, stop_loss_pct })
        }
        _ => None,
    };
    anyhow::ensure!(
        args.starting_quote > Decimal::ZERO && args.fee_bps >= Decimal::ZERO,
        "--starting-quote must be positive and --fee-bps not negative"
    );
    let config = BacktestConfig {
        bot_id: 0,
        strategy: StrategySpec {
            kind: args.strategy.clone().unwrap_or_else(|| "wasm".into()),
            params: params.clone(),
            module_id: None,
        },
        filters: Instrument::for_symbol(symbol.clone()).filters(),
        risk: RiskLimits::default(),
        bracket,
        fee_bps: args.fee_bps,
        slippage_bps: Decimal::from(5),
        starting_quote: args.starting_quote,
        futures: None,
    };
    let bytes_read = Arc::new(AtomicU64::new(0));
    let mut reader =
        TradeReader::open_counted(&args.data, symbol, args.skip_bad_rows, bytes_read.clone())
            .with_context(|| format!("opening {}", args.data.display()))?;
    let bar = progress_bar(args);
    let mut seen: u64 = 0;
    let ticks = reader.by_ref().inspect(|_| {
        seen += 1;
        if seen.is_multiple_of(PROGRESS_EVERY)
            && let Some(bar) = &bar
        {
            bar.set_position(bytes_read.load(Ordering::Relaxed));
        }
    });
    let outcome = match &args.wasm {
        None => run(&config, ticks),
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let host = keel_wasm::WasmHost::new(keel_wasm::WasmConfig {
                max_instances: 2,
                ..keel_wasm::WasmConfig::default()
            })?;
            let strategy = host
                .strategy(&bytes, &params, &config.filters)
                .with_context(|| format!("loading {}", path.display()))?;
            let started = std::time::Instant::now();
            let outcome = keel_core::backtest::run_with(&config, Box::new(strategy), ticks);
            let seconds = started.elapsed().as_secs_f64();
            Ok(outcome.map(|mut o| {
                o.report = o.report.timed(seconds);
                o
            }))
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let outcome = match outcome {
        Err(fields) => {
            let problems: Vec<String> =
                fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
            anyhow::bail!("invalid strategy: {}", problems.join("; "));
        }
        Ok(Err(InputError { file, line, reason })) => {
            anyhow::bail!("{}:{line}: {reason}", file.display())
        }
        Ok(Ok(outcome)) => outcome,
    };
    let curve = equity_after_fills(&outcome, args.starting_quote);
    if let Some(path) = &args.equity_csv {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(out, "ts,equity")?;
        for (ts, equity) in &curve {
            writeln!(out, "{ts},{equity}")?;
        }
        out.flush()?;
    }
    if let Some(path) = &args.plot {
        plot_equity(path, &outcome.report, args.starting_quote, &curve)
            .with_context(|| format!("drawing {}", path.display()))?;
    }
    let skipped = reader.skipped();
    if args.json {
        let mut value = serde_json::to_value(&outcome.report)?;
        value["skipped_rows"] = skipped.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&outcome.report, skipped);
    }
    Ok(())
}

/// Ticks between two progress-bar updates.
const PROGRESS_EVERY: u64 = 1 << 14;

/// A progress bar over the file's bytes, on stderr, when stderr is a terminal and the report
/// is not JSON.
fn progress_bar(args: &BacktestArgs) -> Option<indicatif::ProgressBar> {
    if args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = std::fs::metadata(&args.data).map(|m| m.len()).unwrap_or(0);
    let target = indicatif::ProgressDrawTarget::stderr_with_hz(10);
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

/// Equity (quote balance plus the position at the fill's price) after each fill.
fn equity_after_fills(outcome: &Outcome, starting_quote: Decimal) -> Vec<(u64, Decimal)> {
    let mut position =
        keel_core::trading::Position { quote_balance: starting_quote, ..Default::default() };
    outcome
        .fills
        .iter()
        .map(|fill| {
            position.apply(fill.side, fill.qty, fill.price, fill.fee);
            (fill.ts, position.quote_balance + position.qty * fill.price)
        })
        .collect()
}

/// Draws the equity curve from the first tick (the starting quote) through every fill to the
/// last tick (the ending equity) as an SVG line chart, hours on the x axis.
fn plot_equity(
    path: &Path,
    report: &Report,
    starting_quote: Decimal,
    curve: &[(u64, Decimal)],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    use rust_decimal::prelude::ToPrimitive as _;

    let (first, last) = report.span_ms;
    let hours = |ts: u64| ts.saturating_sub(first) as f64 / 3_600_000.0;
    let value = |d: Decimal| d.to_f64().unwrap_or(0.0);
    let mut points = vec![(0.0, value(starting_quote))];
    points.extend(curve.iter().map(|(ts, equity)| (hours(*ts), value(*equity))));
    points.push((hours(last), value(starting_quote + report.performance.net_pnl)));
    let x_end = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-6);
    let (low, high) =
        points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let pad = ((high - low) * 0.05).max(high.abs() * 1e-4).max(1e-6);

    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("equity: {} ticks, {} fills", report.ticks, curve.len()),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_end, (low - pad)..(high + pad))?;
    chart.configure_mesh().x_desc("hours since the first tick").y_desc("equity (quote)").draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    root.present()?;
    Ok(())
}

fn print_report(r: &Report, skipped: u64) {
    let p = &r.performance;
    println!(
        "ticks           {} ({} skipped), {:.0} ticks/s in {:.2} s",
        r.ticks, skipped, r.ticks_per_sec, r.seconds
    );
    println!("orders / fills  {} / {}", r.orders, p.fill_count);
    println!(
        "net P&L         {} (realised {}, unrealised {}, fees {})",
        p.net_pnl, p.realized_pnl, p.unrealized_pnl, p.fees
    );
    println!(
        "trades          {} ({} won, win rate {:.1} %)",
        p.trade_count,
        p.winning_trades,
        p.win_rate * 100.0
    );
    println!("max drawdown    {} ({:.2} %)", p.max_drawdown, p.max_drawdown_pct * 100.0);
    println!("exposure time   {:.1} %", p.exposure * 100.0);
    println!("end position    {} base, {} quote", r.position.qty, r.position.quote_balance);
}

/// `keel data …`.
///
/// # Errors
/// A bad symbol or an output that cannot be written.
pub fn data(command: &DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Synth { ticks, seed, symbol: raw, out } => {
            let symbol = symbol(raw)?;
            let file = std::fs::File::create(out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
            let rows = write_csv(synth(*ticks, *seed, symbol), &mut writer)?;
            writer.flush()?;
            eprintln!("wrote {rows} trades to {}", out.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_actors::backtest::input::synth;

    use super::*;

    #[test]
    fn the_plot_is_an_svg_line_through_the_equity_curve() {
        let symbol = Symbol::parse("BTCUSDT").unwrap();
        let config = BacktestConfig {
            bot_id: 0,
            strategy: StrategySpec {
                kind: "ema_cross".into(),
                params: serde_json::json!({"fast": 5, "slow": 20, "qty": "0.001"}),
                module_id: None,
            },
            filters: Instrument::for_symbol(symbol.clone()).filters(),
            risk: RiskLimits::default(),
            bracket: None,
            fee_bps: Decimal::TEN,
            slippage_bps: Decimal::from(5),
            starting_quote: Decimal::from(10_000),
            futures: None,
        };
        let ticks = synth(5_000, 3, symbol).map(Ok::<_, ()>);
        let outcome = run(&config, ticks).unwrap().unwrap();
        let curve = equity_after_fills(&outcome, config.starting_quote);
        assert_eq!(curve.len(), outcome.fills.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("equity.svg");
        plot_equity(&path, &outcome.report, config.starting_quote, &curve).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{}",
            &svg[..200.min(svg.len())]
        );
        assert!(svg.contains("equity (quote)"));
        // No fills at all still draws (a flat line).
        let empty = Outcome { fills: Vec::new(), ..outcome };
        plot_equity(&path, &empty.report, config.starting_quote, &[]).unwrap();
    }
}
