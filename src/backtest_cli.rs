//! `keel backtest` and `keel data synth`.

use std::io::Write as _;

use anyhow::Context as _;
use keel_actors::backtest::input::{InputError, TradeReader, synth, write_csv};
use keel_actors::backtest::{BacktestConfig, Report, run};
use keel_actors::bot::Bracket;
use keel_actors::market::Symbol;
use keel_actors::strategy::StrategySpec;
use keel_actors::trading::risk::RiskLimits;
use keel_actors::venues::sim::Instrument;
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
        strategy: StrategySpec { kind: args.strategy.clone(), params },
        filters: Instrument::for_symbol(symbol.clone()).filters(),
        risk: RiskLimits::default(),
        bracket,
        fee_bps: args.fee_bps,
        slippage_bps: Decimal::from(5),
        starting_quote: args.starting_quote,
    };
    let mut reader = TradeReader::open(&args.data, symbol, args.skip_bad_rows)
        .with_context(|| format!("opening {}", args.data.display()))?;
    let outcome = match run(&config, reader.by_ref()) {
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
    if let Some(path) = &args.equity_csv {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(out, "ts,equity")?;
        let mut position = keel_actors::trading::Position {
            quote_balance: args.starting_quote,
            ..Default::default()
        };
        for fill in &outcome.fills {
            position.apply(fill.side, fill.qty, fill.price, fill.fee);
            writeln!(out, "{},{}", fill.ts, position.quote_balance + position.qty * fill.price)?;
        }
        out.flush()?;
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
