"""The customer statement: one self-contained HTML page per finalized invoice.

What a customer reads beside the invoice: the invoice lines with their unit prices, usage by
day (an inline SVG bar chart), usage by model and feature, the credits applied and the wallet
balance at the end of the period, in the customer's currency. No server and no network: the
CSS and the chart are inline, so the file opens anywhere (a browser, a mail attachment) and
prints as it shows.

The billed amounts are the mart's (``fct_invoice_line_items.amount``, ``fct_invoices``): the
page formats them and never rounds them. The usage breakdowns are the rated charges' exact
amounts, shown to the currency's minor unit and labelled as such.
"""

from __future__ import annotations

import html
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import duckdb

from orchestration.defs.invoicing.export import export_key
from orchestration.warehouse import WarehouseTables, as_tables

INVOICES_SQL = """
select
    invoices.invoice_id, invoices.customer_id,
    coalesce(customers.customer_name, invoices.customer_id),
    invoices.subscription_id, invoices.currency, customers.minor_unit_exponent,
    invoices.billing_period_start, invoices.billing_period_end, invoices.subtotal,
    invoices.credits_applied, invoices.total_due, invoices.status, invoices.finalized_at
from marts.fct_invoices as invoices
left join marts.dim_customers as customers on invoices.customer_id = customers.customer_id
where invoices.status = 'finalized'
    and invoices.billing_period_start >= ? and invoices.billing_period_start < ?
order by invoices.invoice_id
"""
LINES_SQL = """
select line_type, description, quantity, unit, unit_price, amount
from marts.fct_invoice_line_items
where invoice_id = ?
order by
    case line_type
        when 'platform_fee' then 0 when 'usage' then 1 when 'spend_cap' then 1.5
        when 'minimum_true_up' then 2
        when 'top_up' then 3 when 'adjustment' then 4 else 5
    end,
    line_key
"""
#: Tokens count the four meters that partition a call (reasoning is a subset of output).
_TOKENS = "sum(case when meter <> 'requests' and meter <> 'reasoning' then quantity else 0 end)"
DAILY_SQL = f"""
select usage_date, sum(amount), {_TOKENS}
from marts.fct_rated_charges_daily
where subscription_id = ? and billing_period_start = ?
group by usage_date order by usage_date
"""
BY_MODEL_SQL = f"""
select model, coalesce(feature, '(none)'), {_TOKENS}, sum(amount)
from marts.fct_rated_charges_daily
where subscription_id = ? and billing_period_start = ?
group by all order by 4 desc, 1, 2
"""
BALANCE_SQL = """
select count(*), sum(balance_at_day_end) from (
    select wallet_id, max_by(balance_at_day_end, balance_date) as balance_at_day_end
    from marts.fct_wallet_balances
    where customer_id = ? and currency = ? and balance_date < ?
    group by wallet_id
)
"""
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def statement_documents(
    con: duckdb.DuckDBPyConnection | WarehouseTables, start: datetime, end: datetime, prefix: str
) -> dict[str, bytes]:
    """S3 key -> HTML bytes, one statement per finalized invoice of periods in [start, end)."""
    con = as_tables(con)
    documents = {}
    has_wallets = con.relation_exists("marts", "fct_wallet_balances")
    for invoice in con.rows(INVOICES_SQL, [start, end]):
        (invoice_id, customer_id, _, subscription_id, currency, exponent, period_start,
         period_end, *_) = invoice  # fmt: skip
        lines = con.rows(LINES_SQL, [invoice_id])
        daily = con.rows(DAILY_SQL, [subscription_id, period_start])
        by_model = con.rows(BY_MODEL_SQL, [subscription_id, period_start])
        wallets, balance = (
            con.rows(BALANCE_SQL, [customer_id, currency, period_end.date()])[0]
            if has_wallets
            else (0, None)
        )
        page = render_statement(
            invoice, lines, daily, by_model, balance if wallets else None, exponent
        )
        documents[export_key(prefix, period_start, invoice_id, "html")] = page.encode()
    return documents


def render_statement(invoice, lines, daily, by_model, wallet_balance, exponent: int) -> str:
    """The statement page of one invoice, from the rows of the queries above."""
    (invoice_id, customer_id, customer_name, subscription_id, currency, _, period_start,
     period_end, subtotal, credits, total_due, status, finalized_at) = invoice  # fmt: skip
    e = exponent or 0
    last_day = (period_end - timedelta(days=1)).date()
    period = f"{period_start:%b %-d, %Y} – {last_day:%b %-d, %Y}"

    def money(value: Decimal | None) -> str:
        return _money(value, currency, e)

    def less(value: Decimal) -> str:
        return ("−" if value else "") + money(value)

    line_rows = "\n".join(
        "<tr>"
        f"<td class=desc>{_esc(description)}</td>"
        f"<td class=num>{_esc(_quantity(quantity, line_type))}</td>"
        f"<td class=num>{_esc(_unit_price(unit_price, unit, currency, e))}</td>"
        f"<td class=num>{money(amount)}</td>"
        "</tr>"
        for line_type, description, quantity, unit, unit_price, amount in lines
        if line_type != "credits"
    )
    model_rows = (
        "\n".join(
            f"<tr><td>{_esc(model)}</td><td>{_esc(feature)}</td>"
            f"<td class=num>{int(tokens):,}</td><td class=num>{money(amount)}</td></tr>"
            for model, feature, tokens, amount in by_model
        )
        or "<tr><td colspan=4>No usage in this period.</td></tr>"
    )
    wallet = (
        f"<div><dt>Wallet balance at {last_day:%b %-d}</dt><dd>{money(wallet_balance)}</dd></div>"
        if wallet_balance is not None
        else ""
    )
    usage_total = sum((row[1] for row in daily), Decimal(0))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Statement {_esc(invoice_id)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
  <div>
    <h1>Statement</h1>
    <p class=muted>{_esc(customer_name)} · {_esc(customer_id)}</p>
  </div>
  <div class=meta>
    <p><strong>{_esc(invoice_id)}</strong></p>
    <p>{_esc(period)} (UTC)</p>
    <p class=muted>{_esc(status)} {finalized_at:%Y-%m-%d} · {_esc(currency)}</p>
  </div>
</header>
<dl class=totals>
  <div><dt>Charges</dt><dd>{money(subtotal)}</dd></div>
  <div><dt>Credits applied</dt><dd>{less(credits)}</dd></div>
  <div class=due><dt>Total due</dt><dd id=total-due>{money(total_due)}</dd></div>
  {wallet}
</dl>
<section>
<h2>Invoice lines</h2>
<table class=lines>
<colgroup><col class=c-desc><col class=c-qty><col class=c-price><col class=c-amt></colgroup>
<thead><tr><th>Description</th><th class=num>Quantity</th><th class=num>Unit price</th>
<th class=num>Amount</th></tr></thead>
<tbody>
{line_rows}
</tbody>
<tfoot>
<tr><td colspan=3>Subtotal</td><td class=num>{money(subtotal)}</td></tr>
<tr><td colspan=3>Prepaid credits applied</td><td class=num>{less(credits)}</td></tr>
<tr class=due><td colspan=3>Total due</td><td class=num>{money(total_due)}</td></tr>
</tfoot>
</table>
<p class=note>Each line is rounded to the {"cent" if e == 2 else "minor unit"} so that the
lines add up exactly to the total, which is the exact total rounded once.</p>
</section>
<section>
<h2>Usage by day</h2>
{_chart(daily, period_start.date(), last_day, currency, e)}
<p class=note>Usage charges of the period: {money(usage_total)} (exact rated amounts, shown to
the {"cent" if e == 2 else "minor unit"}; before allowances' true-up, fees and credits).</p>
</section>
<section>
<h2>Usage by model and feature</h2>
<table class=models>
<thead><tr><th>Model</th><th>Feature</th><th class=num>Tokens</th>
<th class=num>Usage charges</th></tr></thead>
<tbody>
{model_rows}
</tbody>
</table>
</section>
<footer class=muted>Subscription {_esc(subscription_id)} · generated by tokenbill from the
finalized invoice; amounts in {_esc(currency)}.</footer>
</main>
</body>
</html>
"""


def _chart(daily, first: date, last: date, currency: str, exponent: int) -> str:
    """An inline SVG bar chart of the usage charges of every day of the period."""
    by_day = {d: (amount, tokens) for d, amount, tokens in daily}
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    peak = max((a for a, _ in by_day.values()), default=Decimal(0))
    width, height, left, bottom, top = 720, 220, 64, 24, 16
    plot_w, plot_h = width - left - 8, height - bottom - top
    slot = plot_w / len(days)
    bars, labels = [], []
    for i, day in enumerate(days):
        amount, tokens = by_day.get(day, (Decimal(0), 0))
        h = float(amount / peak) * plot_h if peak > 0 else 0.0
        x = left + i * slot + slot * 0.15
        bars.append(
            f'<rect class=bar x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{h:.1f}"><title>{day:%b %-d}: '
            f"{_esc(_money(amount, currency, exponent))}, {int(tokens):,} tokens</title></rect>"
        )
        if day.day == 1 or day.day % 5 == 0:
            labels.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{height - 6}" '
                f'text-anchor="middle">{day.day}</text>'
            )
    peak_label = _esc(_money(peak, currency, exponent))
    return (
        f'<svg class=chart viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Usage charges by day, peak {peak_label}" '
        'xmlns="http://www.w3.org/2000/svg">'
        f'<line class=axis x1="{left}" y1="{top + plot_h}" x2="{width - 8}" '
        f'y2="{top + plot_h}"/>'
        f'<line class=grid x1="{left}" y1="{top}" x2="{width - 8}" y2="{top}"/>'
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak_label}</text>'
        f'<text x="{left - 6}" y="{top + plot_h + 4}" text-anchor="end">0</text>'
        + "".join(bars)
        + "".join(labels)
        + "</svg>"
    )


def _money(value: Decimal | None, currency: str, exponent: int) -> str:
    if value is None:
        return "–"
    quantum = Decimal(1).scaleb(-exponent)
    text = f"{abs(value).quantize(quantum, rounding=ROUND_HALF_UP):,.{exponent}f}"
    symbol = SYMBOLS.get(currency)
    sign = "−" if value < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def _quantity(quantity: int | None, line_type: str) -> str:
    if quantity is None or line_type in ("platform_fee", "spend_cap", "minimum_true_up", "top_up"):
        return ""
    if line_type == "adjustment":
        return f"{quantity} line(s)"
    return f"{quantity:,}"


def _unit_price(price: Decimal | None, unit: str | None, currency: str, exponent: int) -> str:
    if price is None:
        return ""
    text = format(price.normalize(), "f")
    whole, _, frac = text.partition(".")
    frac = frac.ljust(exponent, "0")
    symbol = SYMBOLS.get(currency, currency + " ")
    per = "token" if unit == "1" else unit
    return f"{symbol}{whole}{'.' + frac if frac else ''} per {per}"


def _esc(value) -> str:
    return html.escape(str(value))


_CSS = """
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: #f4f5f7; color: #1d2430;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 24px 20px 40px; background: #fff;
  min-height: 100vh; }
header { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 12px;
  border-bottom: 2px solid #1d2430; padding-bottom: 12px; }
h1 { margin: 0; font-size: 26px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
p { margin: 2px 0; }
.meta { text-align: right; }
.muted { color: #5b6472; }
.totals { display: flex; flex-wrap: wrap; gap: 12px; margin: 20px 0 0; }
.totals div { flex: 1 1 160px; border: 1px solid #d8dce3; border-radius: 8px; padding: 10px 14px; }
.totals dt { color: #5b6472; font-size: 13px; }
.totals dd { margin: 2px 0 0; font-size: 20px; font-weight: 600;
  font-variant-numeric: tabular-nums; }
.totals .due { border-color: #1d2430; background: #f0f3f8; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
th, td { padding: 7px 8px; border-bottom: 1px solid #e4e7ec; vertical-align: top;
  overflow-wrap: anywhere; }
th { text-align: left; font-size: 13px; color: #5b6472; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.num { overflow-wrap: normal; }
.c-desc { width: 52%; } .c-qty { width: 14%; } .c-price { width: 17%; } .c-amt { width: 17%; }
tfoot td { font-weight: 600; border-bottom: none; }
tfoot .due td { border-top: 2px solid #1d2430; font-size: 16px; }
.note { color: #5b6472; font-size: 13px; margin-top: 6px; }
.chart { width: 100%; height: auto; display: block; }
.chart .bar { fill: #3b6fd4; }
.chart .axis { stroke: #1d2430; stroke-width: 1; }
.chart .grid { stroke: #d8dce3; stroke-dasharray: 3 3; }
.chart text { font-size: 11px; fill: #5b6472; }
footer { margin-top: 28px; font-size: 12px; }
@media (max-width: 600px) {
  .meta { text-align: left; }
  .c-desc { width: 46%; } .c-qty { width: 16%; } .c-price { width: 18%; } .c-amt { width: 20%; }
  th, td { padding: 6px 4px; font-size: 13px; }
  .num { white-space: normal; }
}
@media print { body { background: #fff; } main { padding: 0; } }
"""
