// The "add symbol" box: a combobox that completes from the symbols the server knows.

import { normalizeSymbol } from "./preferences.js";
import { matchSymbols } from "./symbol-search.js";

export class SearchBox {
  /**
   * @param {HTMLInputElement} input
   * @param {HTMLUListElement} list   the listbox for suggestions
   * @param {object} options
   * @param {{ticker: string, name: string}[]} options.known
   * @param {() => Set<string>} options.exclude  symbols already on the watchlist
   * @param {(symbol: string) => void} options.onPick
   */
  constructor(input, list, { known, exclude, onPick }) {
    this.input = input;
    this.list = list;
    this.known = known;
    this.exclude = exclude;
    this.onPick = onPick;
    this.matches = [];
    this.active = -1;

    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    list.setAttribute("role", "listbox");

    input.addEventListener("input", () => this._update());
    input.addEventListener("focus", () => this._update());
    input.addEventListener("blur", () => {
      // Let a click on a suggestion land before the list disappears.
      setTimeout(() => this._close(), 150);
    });
    input.addEventListener("keydown", (event) => this._onKey(event));
    list.addEventListener("mousedown", (event) => {
      const item = event.target.closest("li[data-symbol]");
      if (!item) return;
      event.preventDefault(); // keep focus in the input
      this._pick(item.dataset.symbol);
    });
  }

  _update() {
    const query = this.input.value;
    this.matches = query.trim() ? matchSymbols(this.known, query, { exclude: this.exclude(), limit: 8 }) : [];
    this.active = this.matches.length ? 0 : -1;
    this._render();
  }

  _render() {
    this.list.replaceChildren(
      ...this.matches.map((entry, i) => {
        const li = document.createElement("li");
        li.id = `${this.list.id}-${i}`;
        li.dataset.symbol = entry.ticker;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", String(i === this.active));
        const ticker = document.createElement("span");
        ticker.className = "opt-ticker";
        ticker.textContent = entry.ticker;
        const name = document.createElement("span");
        name.className = "opt-name";
        name.textContent = entry.name ?? "";
        const cls = document.createElement("span");
        cls.className = "opt-class";
        cls.textContent = entry.asset_class ?? "";
        li.append(ticker, name, cls);
        return li;
      }),
    );
    const open = this.matches.length > 0;
    this.list.hidden = !open;
    this.input.setAttribute("aria-expanded", String(open));
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `${this.list.id}-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  _close() {
    this.matches = [];
    this.active = -1;
    this._render();
  }

  _onKey(event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!this.matches.length) return;
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.active = (this.active + step + this.matches.length) % this.matches.length;
      this._render();
    } else if (event.key === "Enter") {
      event.preventDefault();
      const typed = normalizeSymbol(this.input.value);
      // An exact ticker wins over the highlighted suggestion; an unknown but
      // well-formed one is still sent: the server has the final word.
      if (typed && this.known.some((k) => k.ticker === typed)) this._pick(typed);
      else if (this.active >= 0) this._pick(this.matches[this.active].ticker);
      else if (typed) this._pick(typed);
    } else if (event.key === "Escape") {
      this.input.value = "";
      this._close();
    }
  }

  _pick(symbol) {
    this.input.value = "";
    this._close();
    this.onPick(symbol);
  }
}
