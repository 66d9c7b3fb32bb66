// The price alerts panel: a form to set one, the list (each editable in place: level,
// direction, on/off, delete) and the history of fired ones. It only draws and reports
// what the user did; app.js talks to the server (AlertsClient).

import { describeAlert, offReasonText } from "./alerts-client.js";

const $new = (tag, props = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el) el[key] = value;
    else el.setAttribute(key, value);
  }
  el.append(...children);
  return el;
};

export class AlertsView {
  /**
   * @param {object} els  {form, symbol, direction, price, repeat, list, history, count}
   * @param {object} handlers  {onCreate(alert), onUpdate(id, changes), onDelete(id)}
   * @param {(symbol: string, price: number) => string} formatPrice
   */
  constructor(els, { onCreate, onUpdate, onDelete, formatPrice }) {
    this.els = els;
    this.formatPrice = formatPrice;
    this.onUpdate = onUpdate;
    this.onDelete = onDelete;
    els.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const price = Number(els.price.value);
      const symbol = els.symbol.value.trim().toUpperCase();
      if (!symbol || !(price > 0)) return;
      onCreate({ symbol, direction: els.direction.value, price, repeat: els.repeat.checked });
    });
    els.list.addEventListener("click", (event) => this._onListClick(event));
    // A symbol the user typed is theirs until the alert is set: selecting another
    // symbol on the chart must not turn their alert into one on that symbol.
    this._symbolTyped = false;
    els.symbol.addEventListener("input", () => {
      this._symbolTyped = true;
    });
  }

  /** Prefill the form for `symbol` at `price` (the chart's selected symbol). */
  prefill(symbol, price) {
    if (this._symbolTyped || document.activeElement === this.els.price || document.activeElement === this.els.symbol) return;
    this.els.symbol.value = symbol ?? "";
    if (price !== null && price !== undefined && !this.els.price.value) this.els.price.placeholder = String(price);
  }

  clearForm() {
    this.els.price.value = "";
    this._symbolTyped = false;
  }

  renderAlerts(alerts) {
    // The list is redrawn whenever an alert fires: an alert being edited keeps what the
    // user typed (and the focus), or a firing alert would undo their edit.
    const edits = new Map();
    for (const item of this.els.list.querySelectorAll("li[data-alert-id]")) {
      const edit = editOf(item);
      if (edit) edits.set(item.dataset.alertId, edit);
    }
    const focused = document.activeElement;
    const focusedItem = focused?.closest?.("li[data-alert-id]");
    const refocus = focusedItem && this.els.list.contains(focusedItem)
      ? { id: focusedItem.dataset.alertId, className: focused.className }
      : null;
    this.els.count.textContent = String(alerts.filter((a) => a.active).length);
    this.els.list.replaceChildren(
      ...alerts.map((a) => withEdit(this._alertItem(a), edits.get(String(a.id)))),
    );
    this.els.empty.hidden = alerts.length > 0;
    if (refocus) {
      const item = this.els.list.querySelector(`li[data-alert-id="${refocus.id}"]`);
      item?.getElementsByClassName(refocus.className)[0]?.focus();
    }
  }

  renderHistory(events) {
    this.els.history.replaceChildren(
      ...events.map((e) =>
        $new(
          "li",
          { className: "alert-event", dataset: { eventId: String(e.event_id) } },
          $new("span", { className: "alert-event-what" }, describeAlert(e, (p) => this.formatPrice(e.symbol, p))),
          $new("span", { className: "alert-event-at" }, `at ${this.formatPrice(e.symbol, e.price)} · ${new Date(e.ts).toLocaleTimeString()}`),
        ),
      ),
    );
  }

  _alertItem(alert) {
    const direction = $new(
      "select",
      { className: "alert-edit-direction", "aria-label": `Direction of alert ${alert.id}` },
      $new("option", { value: "above", selected: alert.direction === "above" }, "above"),
      $new("option", { value: "below", selected: alert.direction === "below" }, "below"),
    );
    const price = $new("input", {
      className: "alert-edit-price", type: "number", step: "any", min: "0", value: String(alert.price),
      "aria-label": `Level of alert ${alert.id}`,
    });
    const active = $new("input", { className: "alert-edit-active", type: "checkbox", checked: alert.active, "aria-label": `Alert ${alert.id} on` });
    const fired = alert.fired_count ? ` · fired ${alert.fired_count}×` : "";
    // Switched off by the server (a right taken away): the server refuses edits (403)
    // while it lasts, so only the on switch (to try again once access is back) and
    // delete are offered.
    const why = offReasonText(alert);
    if (why) {
      direction.disabled = true;
      price.disabled = true;
    }
    return $new(
      "li",
      {
        className: `alert-item${alert.active ? "" : " off"}${why ? " forbidden" : ""}`,
        // What the server holds, to tell an edit in progress (editOf).
        dataset: {
          alertId: String(alert.id), price: String(alert.price), direction: alert.direction,
          active: String(alert.active),
        },
      },
      $new("span", { className: "alert-sym" }, alert.symbol),
      direction,
      price,
      $new("label", { className: "alert-on" }, active, "on"),
      $new("button", { type: "button", className: "alert-save" }, "Save"),
      $new("button", { type: "button", className: "alert-delete", title: "Delete alert", "aria-label": `Delete alert ${alert.id}` }, "×"),
      $new("span", { className: "alert-meta" }, `${alert.repeat ? "every crossing" : "once"}${fired}`),
      ...(why ? [$new("span", { className: "alert-off-reason", role: "note" }, why)] : []),
    );
  }

  _onListClick(event) {
    const item = event.target.closest("li[data-alert-id]");
    if (!item) return;
    const id = Number(item.dataset.alertId);
    if (event.target.closest("button.alert-delete")) {
      this.onDelete(id);
    } else if (event.target.closest("button.alert-save")) {
      const price = Number(item.querySelector(".alert-edit-price").value);
      if (!(price > 0)) return;
      this.onUpdate(id, {
        price,
        direction: item.querySelector(".alert-edit-direction").value,
        active: item.querySelector(".alert-edit-active").checked,
      });
    }
  }
}

/** The values typed into an alert's row that differ from the server's, or null. */
function editOf(item) {
  const price = item.querySelector(".alert-edit-price")?.value;
  const direction = item.querySelector(".alert-edit-direction")?.value;
  const active = item.querySelector(".alert-edit-active")?.checked;
  const d = item.dataset;
  if (price === d.price && direction === d.direction && String(active) === d.active) return null;
  return { price, direction, active };
}

/** ``item`` with an edit in progress carried over from the row it replaces. */
function withEdit(item, edit) {
  if (edit) {
    item.querySelector(".alert-edit-price").value = edit.price;
    item.querySelector(".alert-edit-direction").value = edit.direction;
    item.querySelector(".alert-edit-active").checked = edit.active;
  }
  return item;
}
