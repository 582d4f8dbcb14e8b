//! Small raster charts drawn into an RGB canvas and written as PNG: grouped-bar histograms
//! ([`BarChart`]) and panels of line series sharing one legend ([`LineFigure`], training curves).
//!
//! Text is rasterised from DejaVu Sans (bundled in `eval/assets/`, Bitstream Vera license)
//! with `ab_glyph`; bars are axis-aligned rectangles, lines and markers are anti-aliased by their
//! distance to each pixel centre. A fixed PNG encoder configuration makes the output a pure
//! function of the chart: the same chart gives the same bytes.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use std::sync::OnceLock;

pub type Rgb = [u8; 3];
/// A pixel rectangle `[x0, x1) × [y0, y1)` as `(x0, y0, x1, y1)`.
pub type Rect = (i64, i64, i64, i64);

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
const TEXT: Rgb = [34, 34, 34];
const GRID: Rgb = [225, 225, 225];
const AXIS: Rgb = [90, 90, 90];

/// Series colours: Tableau 10, distinguishable for most colour-vision deficiencies in the
/// first few entries.
pub const PALETTE: [Rgb; 10] = [
    [0x4E, 0x79, 0xA7],
    [0xF2, 0x8E, 0x2B],
    [0x59, 0xA1, 0x4F],
    [0xE1, 0x57, 0x59],
    [0xB0, 0x7A, 0xA1],
    [0x76, 0xB7, 0xB2],
    [0xED, 0xC9, 0x48],
    [0xFF, 0x9D, 0xA7],
    [0x9C, 0x75, 0x5F],
    [0xBA, 0xB0, 0xAC],
];

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).expect("bundled DejaVu Sans parses"))
}

/// Coverage mask of a line of text: `width × height` values in `[0, 1]`, row-major; the
/// baseline is `ascent` pixels below the top.
pub struct TextMask {
    pub width: usize,
    pub height: usize,
    pub ascent: usize,
    pub alpha: Vec<f32>,
}

/// Width in pixels of `s` at `size` px.
pub fn text_width(s: &str, size: f32) -> usize {
    let f = font().as_scaled(PxScale::from(size));
    let mut w = 0.0f32;
    let mut prev = None;
    for c in s.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            w += f.kern(p, id);
        }
        w += f.h_advance(id);
        prev = Some(id);
    }
    w.ceil() as usize
}

pub fn text_mask(s: &str, size: f32) -> TextMask {
    let f = font().as_scaled(PxScale::from(size));
    let ascent = f.ascent().ceil() as usize;
    let height = ascent + (-f.descent()).ceil() as usize + 1;
    let width = text_width(s, size) + 2;
    let mut alpha = vec![0.0f32; width * height];
    let mut x = 0.0f32;
    let mut prev = None;
    for c in s.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            x += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(PxScale::from(size), ab_glyph::point(x, ascent as f32));
        x += f.h_advance(id);
        prev = Some(id);
        if let Some(g) = font().outline_glyph(glyph) {
            let b = g.px_bounds();
            g.draw(|gx, gy, c| {
                let px = b.min.x as i64 + gx as i64;
                let py = b.min.y as i64 + gy as i64;
                if px >= 0 && py >= 0 && (px as usize) < width && (py as usize) < height {
                    let a = &mut alpha[py as usize * width + px as usize];
                    *a = (*a + c).min(1.0);
                }
            });
        }
    }
    TextMask { width, height, ascent, alpha }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Start,
    Center,
    End,
}

/// The 8 bytes every PNG file starts with.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Whether the file at `path` starts as a PNG image does.
fn is_png(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == PNG_SIGNATURE
}

/// An RGB image, row-major, 8 bits per channel.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Canvas {
        Canvas { width, height, pixels: background.iter().copied().cycle().take(width * height * 3).collect() }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Mix `color` over the pixel with opacity `a` in `[0, 1]`; outside the canvas is ignored.
    pub fn blend(&mut self, x: i64, y: i64, color: Rgb, a: f32) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height || a <= 0.0 {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        let a = a.min(1.0);
        for (px, &c) in self.pixels[i..i + 3].iter_mut().zip(&color) {
            let old = *px as f32;
            *px = (old + (c as f32 - old) * a).round() as u8;
        }
    }

    /// Fill the half-open rectangle `[x0, x1) × [y0, y1)`.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                let i = (y as usize * self.width + x as usize) * 3;
                self.pixels[i..i + 3].copy_from_slice(&color);
            }
        }
    }

    /// A one-pixel outline just inside `[x0, x1) × [y0, y1)`.
    pub fn stroke_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        self.fill_rect(x0, y0, x1, y0 + 1, color);
        self.fill_rect(x0, y1 - 1, x1, y1, color);
        self.fill_rect(x0, y0, x0 + 1, y1, color);
        self.fill_rect(x1 - 1, y0, x1, y1, color);
    }

    /// Draw text horizontally: `x` is aligned as `align` says, `y` is the baseline.
    pub fn text(&mut self, s: &str, x: i64, y: i64, size: f32, color: Rgb, align: Align) {
        let m = text_mask(s, size);
        let left = match align {
            Align::Start => x,
            Align::Center => x - m.width as i64 / 2,
            Align::End => x - m.width as i64,
        };
        let top = y - m.ascent as i64;
        for my in 0..m.height {
            for mx in 0..m.width {
                self.blend(left + mx as i64, top + my as i64, color, m.alpha[my * m.width + mx]);
            }
        }
    }

    /// Draw text turned 90° counter-clockwise (reading bottom to top), centred on `cy`, its
    /// baseline on column `x`.
    pub fn text_vertical(&mut self, s: &str, x: i64, cy: i64, size: f32, color: Rgb) {
        let m = text_mask(s, size);
        // Mask pixel (mx, my) goes to (x - ascent + my, cy + width/2 - mx).
        for my in 0..m.height {
            for mx in 0..m.width {
                let px = x - m.ascent as i64 + my as i64;
                let py = cy + m.width as i64 / 2 - mx as i64;
                self.blend(px, py, color, m.alpha[my * m.width + mx]);
            }
        }
    }

    /// An anti-aliased line `width` pixels wide from `a` to `b` (pixel-centre coordinates) with
    /// round ends, so that consecutive segments of a polyline join without gaps. A pixel's
    /// opacity is how far its centre lies inside the line, clamped to [0, 1].
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), width: f64, color: Rgb) {
        let r = width / 2.0;
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let (xs, xe) = ((a.0.min(b.0) - r - 1.0).floor() as i64, (a.0.max(b.0) + r + 1.0).ceil() as i64);
        let (ys, ye) = ((a.1.min(b.1) - r - 1.0).floor() as i64, (a.1.max(b.1) + r + 1.0).ceil() as i64);
        for y in ys.max(0)..=ye.min(self.height as i64 - 1) {
            for x in xs.max(0)..=xe.min(self.width as i64 - 1) {
                let (px, py) = (x as f64, y as f64);
                let t = if len2 > 0.0 { (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let d = (px - a.0 - t * dx).hypot(py - a.1 - t * dy);
                self.blend(x, y, color, (r + 0.5 - d).clamp(0.0, 1.0) as f32);
            }
        }
    }

    /// Writes the PNG to `path` atomically, making its folder first: what every chart of rectify's
    /// commands (`probs`, `curves`, `compare --plot`) ends with.
    pub fn save_png(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context;
        // Only an earlier image is replaced: a path mistyped onto a run's summary.json or
        // results would otherwise lose them.
        if path.is_dir() {
            anyhow::bail!("{} is a folder: give the PNG file's name", path.display());
        }
        if path.exists() && !is_png(path) {
            anyhow::bail!("{} exists and is not a PNG image: choose another path, or remove it first", path.display());
        }
        // PNG bytes under another image's name would open as a broken file.
        if let Some(ext) = path.extension().filter(|e| !e.eq_ignore_ascii_case("png")) {
            anyhow::bail!(
                "{}: charts are PNG images, not .{}: name it {}",
                path.display(),
                ext.to_string_lossy(),
                path.with_extension("png").display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        schemas::write_atomic(path, &self.to_png()).with_context(|| format!("cannot write {}", path.display()))
    }

    /// PNG bytes (8-bit RGB, default compression and filter: deterministic).
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().expect("PNG header to memory");
            w.write_image_data(&self.pixels).expect("PNG data to memory");
        }
        out
    }
}

/// One series of a grouped-bar chart: a value per bin, a colour and legend text.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    /// Extra legend text after the label (e.g. summary numbers).
    pub note: String,
    pub values: Vec<f64>,
    /// Per bin, an interval drawn as a whisker over the bar (empty: none).
    pub intervals: Vec<Option<(f64, f64)>>,
}

/// A histogram with several series side by side in each bin.
#[derive(Clone, Debug)]
pub struct BarChart {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    pub y_label: String,
    /// Bin edges, one more than the bins, increasing.
    pub edges: Vec<f64>,
    /// Names of the bins, written under their centres instead of numeric ticks (empty: a
    /// histogram's numeric axis).
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    pub log_y: bool,
    pub width: usize,
    pub height: usize,
}

/// An interval drawn over a bar: its column, top and bottom rows, and the caps' half-width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Whisker {
    pub x: i64,
    pub top: i64,
    pub bottom: i64,
    pub cap: i64,
}

/// Where things were drawn, for tests and callers that annotate the chart.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Plot area `[x0, x1) × [y0, y1)`.
    pub plot: Rect,
    /// `bars[series][bin]`: the bar's rectangle, `None` where nothing is drawn (zero, or below
    /// the log axis).
    pub bars: Vec<Vec<Option<Rect>>>,
    /// `whiskers[series][bin]`, where an interval was drawn.
    pub whiskers: Vec<Vec<Option<Whisker>>>,
    /// Legend swatch of each series.
    pub swatches: Vec<Rect>,
    pub y_range: (f64, f64),
}

/// "Nice" linear ticks from 0 to at least `max`: steps of 1, 2 or 5 × 10^k, 5 to 9 of them.
pub fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 && max.is_finite() { max } else { 1.0 };
    let raw = max / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let n = (max / step - 1e-9).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..3).find(|&d| {
        let x = step * 10f64.powi(d as i32);
        (x - x.round()).abs() < 1e-6 * x.max(1.0)
    });
    let decimals = decimals.unwrap_or(3);
    format!("{v:.decimals$}")
}

fn log_label(e: i32) -> String {
    if e >= 0 {
        format!("{}", 10f64.powi(e))
    } else {
        format!("{:.*}", (-e) as usize, 10f64.powi(e))
    }
}

const TITLE_PX: f32 = 22.0;
const SUBTITLE_PX: f32 = 15.0;
const LABEL_PX: f32 = 16.0;
const TICK_PX: f32 = 13.0;
const LEGEND_PX: f32 = 14.0;
const LEGEND_ROW: i64 = 24;

impl BarChart {
    /// Height the chart needs for its legend rows below the plot (added to `height`).
    fn legend_height(&self) -> i64 {
        LEGEND_ROW * self.series.len() as i64 + 12
    }

    pub fn render(&self) -> (Canvas, Layout) {
        assert!(self.edges.len() >= 2, "at least one bin");
        let bins = self.edges.len() - 1;
        for s in &self.series {
            assert_eq!(s.values.len(), bins, "series `{}` has {} values for {} bins", s.label, s.values.len(), bins);
            assert!(
                s.intervals.is_empty() || s.intervals.len() == bins,
                "series `{}`: {} intervals for {} bins",
                s.label,
                s.intervals.len(),
                bins
            );
        }
        assert!(self.categories.is_empty() || self.categories.len() == bins, "{} categories for {} bins", self.categories.len(), bins);
        let total_h = self.height + self.legend_height() as usize;
        let mut c = Canvas::new(self.width, total_h, WHITE);
        let (w, h) = (self.width as i64, self.height as i64);
        let (x0, x1) = (92, w - 36);
        let (y0, y1) = (86, h - 70);

        c.text(&self.title, w / 2, 34, TITLE_PX, TEXT, Align::Center);
        c.text(&self.subtitle, w / 2, 60, SUBTITLE_PX, [85, 85, 85], Align::Center);

        // Y axis range and ticks.
        let highs = self.series.iter().flat_map(|s| s.intervals.iter().flatten().map(|i| i.1));
        let max = self.series.iter().flat_map(|s| s.values.iter().copied()).chain(highs).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
        let (lo, hi, ticks): (f64, f64, Vec<(f64, String)>) = if self.log_y {
            let min_pos = self
                .series
                .iter()
                .flat_map(|s| s.values.iter().copied())
                .filter(|v| *v > 0.0 && v.is_finite())
                .fold(f64::INFINITY, f64::min);
            let lo_e = if min_pos.is_finite() { min_pos.log10().floor().max(-9.0) as i32 } else { -3 };
            let hi_e = if max > 0.0 { max.log10().ceil() as i32 } else { 0 };
            let hi_e = hi_e.max(lo_e + 1);
            (10f64.powi(lo_e), 10f64.powi(hi_e), (lo_e..=hi_e).map(|e| (10f64.powi(e), log_label(e))).collect())
        } else {
            let t = linear_ticks(max);
            let step = if t.len() > 1 { t[1] - t[0] } else { 1.0 };
            let hi = *t.last().expect("ticks");
            (0.0, hi, t.iter().map(|&v| (v, tick_label(v, step))).collect())
        };
        let y_of = |v: f64| -> i64 {
            let f = if self.log_y { (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) } else { (v - lo) / (hi - lo) };
            y1 - (f.clamp(0.0, 1.0) * (y1 - y0) as f64).round() as i64
        };
        let (xlo, xhi) = (self.edges[0], self.edges[bins]);
        let x_of = |v: f64| -> i64 { x0 + ((v - xlo) / (xhi - xlo) * (x1 - x0) as f64).round() as i64 };

        // Grid and tick labels.
        for (v, label) in &ticks {
            let y = y_of(*v);
            c.fill_rect(x0, y, x1, y + 1, GRID);
            c.fill_rect(x0 - 5, y, x0, y + 1, AXIS);
            c.text(label, x0 - 9, y + 5, TICK_PX, TEXT, Align::End);
        }
        if self.log_y {
            // Minor grid at 2..9 × 10^e.
            for (v, _) in ticks.iter().take(ticks.len() - 1) {
                for k in 2..10 {
                    let y = y_of(v * k as f64);
                    c.fill_rect(x0 - 2, y, x0, y + 1, AXIS);
                }
            }
        }
        if self.categories.is_empty() {
            let x_step = x_tick_step(xhi - xlo, bins);
            let n_xticks = ((xhi - xlo) / x_step).round() as i64;
            for i in 0..=n_xticks {
                let v = xlo + i as f64 * x_step;
                let x = x_of(v);
                c.fill_rect(x, y1, x + 1, y1 + 5, AXIS);
                c.text(&tick_label(v, x_step), x, y1 + 21, TICK_PX, TEXT, Align::Center);
            }
        } else {
            for (name, edge) in self.categories.iter().zip(self.edges.windows(2)) {
                c.text(name, (x_of(edge[0]) + x_of(edge[1])) / 2, y1 + 21, TICK_PX, TEXT, Align::Center);
            }
        }

        // Bars: each bin's group takes 84% of the bin, split evenly among the series.
        let n = self.series.len().max(1) as i64;
        let mut bars = vec![vec![None; bins]; self.series.len()];
        let mut whiskers = vec![vec![None; bins]; self.series.len()];
        for (b, edge) in self.edges.windows(2).enumerate() {
            let (bx0, bx1) = (x_of(edge[0]), x_of(edge[1]));
            let group = ((bx1 - bx0) as f64 * 0.84).round() as i64;
            let gx0 = bx0 + ((bx1 - bx0) - group) / 2;
            let bar_w = (group / n).max(1);
            let gx0 = gx0 + (group - bar_w * n) / 2;
            for (s, series) in self.series.iter().enumerate() {
                let v = series.values[b];
                // A whisker is drawn over a bar of 0 too: 0 of 30 is not certainly 0.
                if let Some(Some((ilo, ihi))) = series.intervals.get(b) {
                    let x = gx0 + s as i64 * bar_w + bar_w / 2;
                    // Caps a quarter of the bar wide each way, so neighbouring bars' caps never meet.
                    whiskers[s][b] = Some(Whisker { x, top: y_of(*ihi), bottom: y_of(*ilo), cap: (bar_w / 4).clamp(1, 8) });
                }
                if v.is_nan() || v <= 0.0 || (self.log_y && v < lo) {
                    continue;
                }
                let top = y_of(v).min(y1 - 1);
                let rect = (gx0 + s as i64 * bar_w, top, gx0 + (s as i64 + 1) * bar_w, y1);
                let color = PALETTE[s % PALETTE.len()];
                c.fill_rect(rect.0, rect.1, rect.2, rect.3, color);
                if rect.2 - rect.0 >= 6 && rect.3 - rect.1 >= 6 {
                    c.stroke_rect(rect.0, rect.1, rect.2, rect.3, darker(color));
                }
                bars[s][b] = Some(rect);
            }
        }

        // Whiskers over the bars.
        for &Whisker { x, top, bottom, cap } in whiskers.iter().flatten().flatten() {
            c.fill_rect(x, top, x + 1, bottom + 1, TEXT);
            c.fill_rect(x - cap, top, x + cap + 1, top + 1, TEXT);
            c.fill_rect(x - cap, bottom, x + cap + 1, bottom + 1, TEXT);
        }

        // Axes.
        c.fill_rect(x0, y1, x1, y1 + 1, AXIS);
        c.fill_rect(x0 - 1, y0, x0, y1 + 1, AXIS);
        c.text(&self.x_label, (x0 + x1) / 2, y1 + 48, LABEL_PX, TEXT, Align::Center);
        c.text_vertical(&self.y_label, 26, (y0 + y1) / 2, LABEL_PX, TEXT);

        // Legend below the plot: swatch, label in bold colour-free text, then the note.
        let mut swatches = vec![];
        // Notes line up in one column after the widest label.
        let note_x = x0 + 38 + self.legend_label_width() + 16;
        for (s, series) in self.series.iter().enumerate() {
            let top = h + 4 + s as i64 * LEGEND_ROW;
            let color = PALETTE[s % PALETTE.len()];
            let sw = (x0, top + 3, x0 + 28, top + 19);
            c.fill_rect(sw.0, sw.1, sw.2, sw.3, color);
            c.stroke_rect(sw.0, sw.1, sw.2, sw.3, darker(color));
            swatches.push(sw);
            let base = top + 16;
            c.text(&series.label, x0 + 38, base, LEGEND_PX, TEXT, Align::Start);
            c.text(&series.note, note_x, base, LEGEND_PX, [70, 70, 70], Align::Start);
        }
        (c, Layout { plot: (x0, y0, x1, y1), bars, whiskers, swatches, y_range: (lo, hi) })
    }

    fn legend_label_width(&self) -> i64 {
        self.series.iter().map(|s| text_width(&s.label, LEGEND_PX) as i64).max().unwrap_or(0)
    }
}

/// Nice ticks spanning `[lo, hi]`: steps of 1, 2 or 5 × 10^k, the first at or below `lo` and
/// the last at or above `hi`, 4 to 8 of them. A flat range is widened around its value (by a
/// tenth of it, or by 1 around 0), so a constant series is drawn mid-panel.
pub fn range_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() / 10.0 };
        (lo - pad, hi + pad)
    };
    let raw = (hi - lo) / 6.0;
    // k × 10^e computed as k / 10^-e for negative e: integers and powers of ten up to 10^22 are
    // exact, so a tick is the float nearest its decimal (5e-5, not 4.9999999999999996e-5).
    let e = raw.log10().floor() as i32;
    let scale = |k: f64| if e >= 0 { k * 10f64.powi(e) } else { k / 10f64.powi(-e) };
    let m = [1.0, 2.0, 5.0, 10.0].into_iter().find(|&m| scale(m) >= raw * (1.0 - 1e-9)).unwrap_or(10.0);
    let step = scale(m);
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    (first..=last.max(first + 1)).map(|i| scale(i as f64 * m)).collect()
}

/// The labels of an axis's ticks (evenly spaced, as [`range_ticks`] gives them): plain, with the
/// decimals the step needs, or in scientific notation when every tick is below 0.001 in size
/// (learning rates: `5e-5`, `4.4e-5`) or the largest is a million or more. Either way with the
/// digits the step needs, so neighbouring ticks never share a label.
fn axis_labels(ticks: &[f64]) -> Vec<String> {
    let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 1.0 };
    let top = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scientific = !(1e-3..1e6).contains(&top);
    let decimals = (0..=12)
        .find(|&d| {
            let x = step * 10f64.powi(d);
            (x - x.round()).abs() < 1e-6 * x.max(1.0)
        })
        .unwrap_or(12) as usize;
    let label = |v: f64| {
        if v == 0.0 {
            return "0".to_string();
        }
        if !scientific {
            return format!("{v:.decimals$}");
        }
        let digits = (v.abs().log10().floor() - step.log10().floor()).max(0.0) as usize;
        let s = format!("{v:.digits$e}");
        // `2.50e-5` → `2.5e-5`: trailing zeros of the mantissa say nothing.
        match s.split_once('e') {
            Some((m, e)) if m.contains('.') => format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.')),
            _ => s,
        }
    };
    ticks.iter().map(|&v| label(v)).collect()
}

/// One panel of a [`LineFigure`]: a title and, per series of the figure (same order, same
/// colour), its points `(x, y)`. Non-finite points are left out, breaking the line there.
#[derive(Clone, Debug)]
pub struct LinePanel {
    pub title: String,
    pub series: Vec<Vec<(f64, f64)>>,
    /// Series longer than [`MARKERS_UP_TO`] points are drawn faint, with their [`smoothed`]
    /// line on top (noisy per-step losses); off for quantities that are smooth already.
    pub smooth: bool,
}

/// Panels of line charts in a grid, sharing the x label and a legend below them: training
/// curves of one or more runs, one panel per quantity.
#[derive(Clone, Debug)]
pub struct LineFigure {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    /// The x values are log2 of what the axis shows (pass@k over k = 1, 2, 4, ...): whole ticks,
    /// each labelled with its power of two.
    pub x_log2: bool,
    /// No y tick below this (rates: 0), so a series flat at the bound is drawn on the bottom
    /// line rather than mid-panel over negative ticks.
    pub y_min: Option<f64>,
    /// Per series: label and a note after it (summary numbers).
    pub legend: Vec<(String, String)>,
    pub panels: Vec<LinePanel>,
    pub columns: usize,
    pub panel_width: usize,
    pub panel_height: usize,
}

/// Where a panel was drawn: its plot area, axis ranges, the x axis' ticks and each series' points
/// in pixels (`None` for a point left out).
#[derive(Clone, Debug)]
pub struct PanelLayout {
    pub plot: Rect,
    pub x_range: (f64, f64),
    pub x_ticks: Vec<f64>,
    pub y_range: (f64, f64),
    pub points: Vec<Vec<Option<(i64, i64)>>>,
}

/// Space above the panels for the title and subtitle.
const FIGURE_HEADER: i64 = 78;
/// Markers are drawn on series with at most this many points; denser ones are lines alone (and
/// smoothed where the panel asks for it).
pub const MARKERS_UP_TO: usize = 60;

/// The shortest window [`smoothed`] averages over, in points: below it a smoothed line would only
/// retrace the raw one.
const SMOOTHING_MIN_WINDOW: f64 = 5.0;

/// An exponential moving average of the finite values, each new value weighted 1 / window with a
/// window of a fiftieth of the series (at least [`SMOOTHING_MIN_WINDOW`]), debiased at the start (as TensorBoard's smoothing is), so the line starts at the first
/// value rather than at 0. Non-finite values are passed over and stay out (`None`).
pub fn smoothed(values: &[(f64, f64)]) -> Vec<Option<(f64, f64)>> {
    let window = (values.len() as f64 / 50.0).max(SMOOTHING_MIN_WINDOW);
    let keep = 1.0 - 1.0 / window;
    let (mut avg, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&(x, y)| {
            if !(x.is_finite() && y.is_finite()) {
                return None;
            }
            avg = keep * avg + (1.0 - keep) * y;
            weight = keep * weight + (1.0 - keep);
            Some((x, avg / weight))
        })
        .collect()
}

/// `c` mixed with white: the faint colour of raw values behind their smoothed line.
fn faint(c: Rgb) -> Rgb {
    c.map(|v| (v as u16 + (255 - v as u16) * 3 / 5) as u8)
}

impl LineFigure {
    pub fn render(&self) -> (Canvas, Vec<PanelLayout>) {
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols).max(1);
        let (pw, ph) = (self.panel_width as i64, self.panel_height as i64);
        let legend_top = FIGURE_HEADER + rows as i64 * ph + 8;
        let note_x = 40 + 38 + self.legend.iter().map(|(l, _)| text_width(l, LEGEND_PX) as i64).max().unwrap_or(0) + 16;
        // Wide enough for the title, subtitle and legend too (one panel is narrower than a
        // long model path), the panels centred in it.
        let text = [
            text_width(&self.title, TITLE_PX) as i64 + 40,
            text_width(&self.subtitle, SUBTITLE_PX) as i64 + 40,
            note_x + self.legend.iter().map(|(_, n)| text_width(n, LEGEND_PX) as i64).max().unwrap_or(0) + 20,
        ];
        let panels_width = cols as i64 * pw;
        let width = text.into_iter().fold(panels_width, i64::max) as usize;
        let left = (width as i64 - panels_width) / 2;
        let height = (legend_top + LEGEND_ROW * self.legend.len() as i64 + 12) as usize;
        let mut c = Canvas::new(width, height, WHITE);
        c.text(&self.title, width as i64 / 2, 34, TITLE_PX, TEXT, Align::Center);
        c.text(&self.subtitle, width as i64 / 2, 60, SUBTITLE_PX, [85, 85, 85], Align::Center);
        let layouts = self
            .panels
            .iter()
            .enumerate()
            .map(|(i, p)| self.panel(&mut c, p, left + (i % cols) as i64 * pw, FIGURE_HEADER + (i / cols) as i64 * ph))
            .collect();
        for (s, (label, note)) in self.legend.iter().enumerate() {
            let top = legend_top + s as i64 * LEGEND_ROW;
            let color = PALETTE[s % PALETTE.len()];
            c.line((40.0, (top + 11) as f64), (68.0, (top + 11) as f64), 3.0, color);
            c.text(label, 78, top + 16, LEGEND_PX, TEXT, Align::Start);
            c.text(note, note_x, top + 16, LEGEND_PX, [70, 70, 70], Align::Start);
        }
        (c, layouts)
    }

    /// One panel with its top-left corner at `(left, top)`.
    fn panel(&self, c: &mut Canvas, p: &LinePanel, left: i64, top: i64) -> PanelLayout {
        let (x0, x1) = (left + 78, left + self.panel_width as i64 - 22);
        let (y0, y1) = (top + 34, top + self.panel_height as i64 - 52);
        c.text(&p.title, (x0 + x1) / 2, top + 22, LABEL_PX, TEXT, Align::Center);
        let finite = |s: &Vec<(f64, f64)>| s.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect::<Vec<_>>();
        let all: Vec<(f64, f64)> = p.series.iter().flat_map(finite).collect();
        let bounds = |f: fn(&(f64, f64)) -> f64| {
            let lo = all.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = all.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() {
                (lo, hi)
            } else {
                (0.0, 1.0)
            }
        };
        let ((xa, xb), (ya, yb)) = (bounds(|p| p.0), bounds(|p| p.1));
        let mut xt = range_ticks(xa, xb);
        if xt[1] - xt[0] < 1.0 && (self.x_log2 || all.iter().all(|p| p.0.fract() == 0.0)) {
            // Steps are whole, or the axis is in powers of two: no tick between two of them.
            xt = (xa.floor() as i64..=(xb.ceil() as i64).max(xa.floor() as i64 + 1)).map(|v| v as f64).collect();
        }
        let yt = match self.y_min {
            None => range_ticks(ya, yb),
            Some(m) => range_ticks(ya.max(m), yb.max(m)).into_iter().filter(|&t| t >= m - 1e-9 * m.abs().max(1.0)).collect(),
        };
        let (xlo, xhi) = (xt[0], xt[xt.len() - 1]);
        let (ylo, yhi) = (yt[0], yt[yt.len() - 1]);
        let x_of = |v: f64| x0 as f64 + (v - xlo) / (xhi - xlo) * (x1 - x0 - 1) as f64;
        let y_of = |v: f64| (y1 - 1) as f64 - (v - ylo) / (yhi - ylo) * (y1 - y0 - 1) as f64;
        for (&v, label) in yt.iter().zip(axis_labels(&yt)) {
            let y = y_of(v).round() as i64;
            c.fill_rect(x0, y, x1, y + 1, GRID);
            c.fill_rect(x0 - 5, y, x0, y + 1, AXIS);
            c.text(&label, x0 - 9, y + 5, TICK_PX, TEXT, Align::End);
        }
        let x_labels = if self.x_log2 { xt.iter().map(|v| format!("{}", 2f64.powf(*v))).collect() } else { axis_labels(&xt) };
        for (&v, label) in xt.iter().zip(x_labels) {
            let x = x_of(v).round() as i64;
            c.fill_rect(x, y1, x + 1, y1 + 5, AXIS);
            c.text(&label, x, y1 + 20, TICK_PX, TEXT, Align::Center);
        }
        c.fill_rect(x0, y1, x1, y1 + 1, AXIS);
        c.fill_rect(x0 - 1, y0, x0, y1 + 1, AXIS);
        c.text(&self.x_label, (x0 + x1) / 2, y1 + 40, TICK_PX, TEXT, Align::Center);
        let to_px = |q: Option<(f64, f64)>| q.filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (x_of(x), y_of(y)));
        let polyline = |c: &mut Canvas, line: &[Option<(f64, f64)>], width: f64, color: Rgb| {
            for w in thinned(line, (x1 - x0) as usize).windows(2) {
                if let [Some(a), Some(b)] = w {
                    c.line(*a, *b, width, color);
                }
            }
        };
        let smooth = |series: &Vec<(f64, f64)>| p.smooth && series.len() > MARKERS_UP_TO;
        // The faint raw values of every series first, so that no run's raw values cover another
        // run's smoothed line.
        for (s, series) in p.series.iter().enumerate().filter(|(_, series)| smooth(series)) {
            let raw: Vec<Option<(f64, f64)>> = series.iter().map(|&q| to_px(Some(q))).collect();
            polyline(c, &raw, 1.0, faint(PALETTE[s % PALETTE.len()]));
        }
        let mut points = vec![];
        for (s, series) in p.series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            let px: Vec<Option<(f64, f64)>> = series.iter().map(|&q| to_px(Some(q))).collect();
            if smooth(series) {
                let line: Vec<Option<(f64, f64)>> = smoothed(series).into_iter().map(to_px).collect();
                polyline(c, &line, 2.0, color);
            } else {
                polyline(c, &px, 2.0, color);
            }
            if series.len() <= MARKERS_UP_TO {
                for q in px.iter().flatten() {
                    c.line(*q, *q, 6.0, color);
                }
            }
            points.push(px.iter().map(|q| q.map(|(x, y)| (x.round() as i64, y.round() as i64))).collect());
        }
        PanelLayout { plot: (x0, y0, x1, y1), x_range: (xlo, xhi), x_ticks: xt, y_range: (ylo, yhi), points }
    }
}

/// A polyline of more points than twice the columns it spans, reduced to the first, lowest,
/// highest and last point of each pixel column (in their order), which draws the same band of
/// pixels: a long run's curves are redrawn at every checkpoint, and drawing costs per segment.
/// A left-out point (`None`) stays, so lines still break there.
fn thinned(px: &[Option<(f64, f64)>], columns: usize) -> Vec<Option<(f64, f64)>> {
    if px.len() <= 2 * columns.max(1) {
        return px.to_vec();
    }
    let mut out = vec![];
    let mut run: Vec<(f64, f64)> = vec![];
    let flush = |run: &mut Vec<(f64, f64)>, out: &mut Vec<Option<(f64, f64)>>| {
        if run.is_empty() {
            return;
        }
        let by_y = |a: &(usize, &(f64, f64)), b: &(usize, &(f64, f64))| a.1 .1.total_cmp(&b.1 .1);
        let lo = run.iter().enumerate().min_by(by_y).map_or(0, |(i, _)| i);
        let hi = run.iter().enumerate().max_by(by_y).map_or(0, |(i, _)| i);
        let mut keep = vec![0, lo, hi, run.len() - 1];
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|i| Some(run[i])));
        run.clear();
    };
    for q in px {
        match q {
            Some(p) => {
                if run.last().is_some_and(|l| l.0.floor() != p.0.floor()) {
                    flush(&mut run, &mut out);
                }
                run.push(*p);
            }
            None => {
                flush(&mut run, &mut out);
                out.push(None);
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// X tick spacing: 0.1 of a unit range unless the bins are coarser or finer in a way that
/// makes another step line up with their edges.
fn x_tick_step(range: f64, bins: usize) -> f64 {
    let per_bin = range / bins as f64;
    let target = range / 10.0;
    if per_bin >= target {
        per_bin
    } else {
        // The smallest multiple of the bin width that is at least a tenth of the range.
        per_bin * (target / per_bin - 1e-9).ceil()
    }
}

fn darker(c: Rgb) -> Rgb {
    [(c[0] as u16 * 7 / 10) as u8, (c[1] as u16 * 7 / 10) as u8, (c[2] as u16 * 7 / 10) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_nice_and_cover_the_maximum() {
        let t = linear_ticks(0.57);
        assert_eq!(t.len(), 7);
        assert!(t.iter().zip([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).all(|(a, b)| (a - b).abs() < 1e-12), "{t:?}");
        let t = linear_ticks(0.043);
        assert_eq!(t.len(), 6);
        assert!((t[1] - 0.01).abs() < 1e-12 && *t.last().unwrap() >= 0.043);
        let t = linear_ticks(0.999);
        assert!((t[1] - 0.2).abs() < 1e-12 && t.len() == 6, "{t:?}");
        assert_eq!(linear_ticks(0.0), linear_ticks(1.0));
        assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
        assert_eq!(tick_label(0.05, 0.05), "0.05");
        assert_eq!(tick_label(0.25, 0.25), "0.25");
        assert_eq!(log_label(-3), "0.001");
        assert_eq!(log_label(0), "1");
    }

    #[test]
    fn x_ticks_line_up_with_bin_edges() {
        assert!((x_tick_step(1.0, 20) - 0.1).abs() < 1e-12);
        assert!((x_tick_step(1.0, 10) - 0.1).abs() < 1e-12);
        assert!((x_tick_step(1.0, 4) - 0.25).abs() < 1e-12);
        assert!((x_tick_step(1.0, 30) - 0.1).abs() < 1e-12);
        assert!((x_tick_step(1.0, 7) - 1.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn text_is_drawn_where_asked() {
        let mut c = Canvas::new(200, 60, WHITE);
        c.text("probability 0.9", 100, 40, 16.0, BLACK, Align::Center);
        let dark: Vec<(usize, usize)> =
            (0..60).flat_map(|y| (0..200).map(move |x| (x, y))).filter(|&(x, y)| c.get(x, y)[0] < 128).collect();
        assert!(dark.len() > 100, "{} dark pixels", dark.len());
        let (minx, maxx) = (dark.iter().map(|p| p.0).min().unwrap(), dark.iter().map(|p| p.0).max().unwrap());
        let (miny, maxy) = (dark.iter().map(|p| p.1).min().unwrap(), dark.iter().map(|p| p.1).max().unwrap());
        // Centred on x = 100, sitting on the baseline y = 40 (the descender of "p"/"y" below).
        assert!(((minx + maxx) as i64 / 2 - 100).abs() <= 3, "{minx}..{maxx}");
        assert!((26..=31).contains(&miny) && (41..=45).contains(&maxy), "{miny}..{maxy}");
        let w = text_width("probability 0.9", 16.0);
        assert!((maxx - minx + 1) as i64 - w as i64 <= 0 && w - (maxx - minx + 1) < 6, "{w} vs {}", maxx - minx + 1);

        let mut v = Canvas::new(60, 200, WHITE);
        v.text_vertical("fraction", 30, 100, 16.0, BLACK);
        let dark: Vec<(usize, usize)> =
            (0..200).flat_map(|y| (0..60).map(move |x| (x, y))).filter(|&(x, y)| v.get(x, y)[0] < 128).collect();
        let (minx, maxx) = (dark.iter().map(|p| p.0).min().unwrap(), dark.iter().map(|p| p.0).max().unwrap());
        let (miny, maxy) = (dark.iter().map(|p| p.1).min().unwrap(), dark.iter().map(|p| p.1).max().unwrap());
        // Turned: taller than wide, centred on y = 100, left of the baseline column.
        assert!(maxy - miny > 3 * (maxx - minx), "{minx}..{maxx} × {miny}..{maxy}");
        assert!(((miny + maxy) as i64 / 2 - 100).abs() <= 3 && maxx <= 31);
    }

    fn chart(log_y: bool) -> BarChart {
        BarChart {
            title: "t".into(),
            subtitle: "s".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            edges: (0..=4).map(|i| i as f64 / 4.0).collect(),
            categories: vec![],
            series: vec![
                Series { label: "a".into(), note: String::new(), values: vec![0.5, 0.0, 0.25, 0.25], intervals: vec![] },
                Series { label: "b".into(), note: String::new(), values: vec![0.001, 0.0, 0.0, 0.999], intervals: vec![] },
            ],
            log_y,
            width: 600,
            height: 400,
        }
    }

    #[test]
    fn bars_have_their_colour_height_and_order() {
        for log_y in [false, true] {
            let ch = chart(log_y);
            let (c, l) = ch.render();
            assert_eq!((c.width, c.height), (600, 400 + 2 * 24 + 12));
            for (s, series) in ch.series.iter().enumerate() {
                for (b, &v) in series.values.iter().enumerate() {
                    match l.bars[s][b] {
                        None => assert_eq!(v, 0.0, "series {s} bin {b}"),
                        Some((x0, y0, x1, y1)) => {
                            assert!(v > 0.0);
                            assert_eq!(c.get(((x0 + x1) / 2) as usize, ((y0 + y1) / 2) as usize), PALETTE[s], "series {s} bin {b}");
                            assert_eq!(y1, l.plot.3);
                            // Inside its bin, series side by side in order.
                            assert!(
                                x0 >= l.plot.0 + b as i64 * (l.plot.2 - l.plot.0) / 4
                                    && x1 <= l.plot.0 + (b as i64 + 1) * (l.plot.2 - l.plot.0) / 4 + 1
                            );
                            if s == 1 {
                                assert!(x0 >= l.bars[0][b].map_or(x0, |r| r.2));
                            }
                        }
                    }
                }
                // Empty bins show background at the foot of the plot, where a bar would be.
                let x = (l.plot.0 + (l.plot.2 - l.plot.0) * 3 / 8) as usize;
                assert_eq!(c.get(x, (l.plot.3 - 3) as usize), WHITE);
            }
            // Heights are ordered like the values.
            let height = |s: usize, b: usize| l.bars[s][b].map(|r| r.3 - r.1).unwrap();
            assert!(height(1, 3) > height(0, 0) && height(0, 0) > height(0, 2) && height(0, 2) > height(1, 0));
            if !log_y {
                // Linear: 0.5 is half of 0.999's bar (within rounding), axis top at 1.0.
                assert_eq!(l.y_range, (0.0, 1.0));
                assert!((height(0, 0) as f64 / height(1, 3) as f64 - 0.5 / 0.999).abs() < 0.01);
            } else {
                assert_eq!(l.y_range, (0.001, 1.0));
            }
            for (s, sw) in l.swatches.iter().enumerate() {
                assert_eq!(c.get(((sw.0 + sw.2) / 2) as usize, ((sw.1 + sw.3) / 2) as usize), PALETTE[s]);
            }
        }
    }

    #[test]
    fn range_ticks_span_the_data_with_nice_steps() {
        let close = |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(&range_ticks(1.0, 8.0), &[0.0, 2.0, 4.0, 6.0, 8.0]), "{:?}", range_ticks(1.0, 8.0));
        assert!(close(&range_ticks(0.0713, 0.1454), &[0.06, 0.08, 0.1, 0.12, 0.14, 0.16]), "{:?}", range_ticks(0.0713, 0.1454));
        // A constant series: widened around its value (a tenth each way); a constant 0 by 1.
        assert!(close(&range_ticks(5e-5, 5e-5), &[4.4e-5, 4.6e-5, 4.8e-5, 5e-5, 5.2e-5, 5.4e-5, 5.6e-5]));
        assert!(close(&range_ticks(0.0, 0.0), &[-1.0, -0.5, 0.0, 0.5, 1.0]), "{:?}", range_ticks(0.0, 0.0));
        for (lo, hi) in [(3.0, 1000.0), (-2.5, 0.3), (0.59, 0.71), (1e-6, 5e-5), (1.2, 1.33), (0.5, 0.5000001)] {
            let t = range_ticks(lo, hi);
            assert!(t[0] <= lo && *t.last().unwrap() >= hi && (3..=9).contains(&t.len()), "{lo}..{hi}: {t:?}");
        }
        assert_eq!(axis_labels(&range_ticks(5e-5, 5e-5)), ["4.4e-5", "4.6e-5", "4.8e-5", "5e-5", "5.2e-5", "5.4e-5", "5.6e-5"]);
        assert_eq!(axis_labels(&[0.0, 1e-5, 2e-5]), ["0", "1e-5", "2e-5"]);
        assert_eq!(axis_labels(&range_ticks(0.0713, 0.1454)), ["0.06", "0.08", "0.10", "0.12", "0.14", "0.16"]);
        assert_eq!(axis_labels(&[0.0, 5e5, 1e6, 1.5e6]), ["0", "5e5", "1e6", "1.5e6"]);
        // Narrow ranges away from 0 keep the digits that tell the ticks apart.
        for (lo, hi) in [(1.2903, 1.2907), (0.59412, 0.59431), (1e6, 1e6 + 10.0), (5e-5, 5e-5), (1.0, 8.0), (1e-7, 3e-7)] {
            let labels = axis_labels(&range_ticks(lo, hi));
            let mut distinct = labels.clone();
            distinct.dedup();
            assert_eq!(distinct, labels, "{lo}..{hi}");
        }
        assert_eq!(axis_labels(&range_ticks(1.2903, 1.2907))[..2], ["1.2903", "1.2904"]);
    }

    fn figure() -> LineFigure {
        LineFigure {
            title: "Training curves".into(),
            subtitle: "two runs".into(),
            x_label: "step".into(),
            x_log2: false,
            y_min: None,
            legend: vec![("dft".into(), "8 steps".into()), ("sft".into(), "8 steps".into())],
            panels: vec![
                LinePanel {
                    title: "objective".into(),
                    series: vec![vec![(1.0, 0.5), (2.0, 0.25), (3.0, 0.125)], vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, 0.5)]],
                    smooth: true,
                },
                LinePanel { title: "lr".into(), series: vec![vec![(1.0, 5e-5), (2.0, 5e-5)], vec![]], smooth: false },
                LinePanel { title: "empty".into(), series: vec![vec![], vec![]], smooth: true },
            ],
            columns: 2,
            panel_width: 400,
            panel_height: 260,
        }
    }

    #[test]
    fn line_panels_place_points_and_skip_the_missing() {
        let (c, layouts) = figure().render();
        // Two columns, two rows of panels, a legend row per series.
        assert_eq!((c.width, c.height), (800, (FIGURE_HEADER + 2 * 260 + 8 + 2 * LEGEND_ROW + 12) as usize));
        let p = &layouts[0];
        // Whole steps: ticks at whole numbers only.
        assert_eq!(p.x_range, (1.0, 3.0));
        assert_eq!(p.x_ticks, [1.0, 2.0, 3.0]);
        assert!(p.y_range.0 <= 0.125 && p.y_range.1 >= 1.0);
        let (x0, y0, x1, y1) = p.plot;
        let dft: Vec<(i64, i64)> = p.points[0].iter().map(|q| q.unwrap()).collect();
        // Inside the plot area, left to right, falling as the values fall.
        assert!(dft.iter().all(|&(x, y)| (x0..x1).contains(&x) && (y0..y1).contains(&y)), "{dft:?} in {:?}", p.plot);
        assert!(dft[0].0 < dft[1].0 && dft[1].0 < dft[2].0 && dft[0].1 < dft[1].1 && dft[1].1 < dft[2].1, "{dft:?}");
        // Each point is drawn in its series' colour; the line between passes its midpoint.
        for &(x, y) in &dft {
            assert_eq!(c.get(x as usize, y as usize), PALETTE[0]);
        }
        let mid = ((dft[0].0 + dft[1].0) / 2, (dft[0].1 + dft[1].1) / 2);
        let near = (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)));
        assert!(near.clone().any(|(dx, dy)| c.get((mid.0 + dx) as usize, (mid.1 + dy) as usize) == PALETTE[0]), "no line at {mid:?}");
        // The NaN point is left out, and no line joins its neighbours across it.
        let sft = &p.points[1];
        assert!(sft[0].is_some() && sft[1].is_none() && sft[2].is_some());
        let (a, b) = (sft[0].unwrap(), sft[2].unwrap());
        let mid = ((a.0 + b.0) / 2, (a.1 + b.1) / 2);
        assert!(near.clone().all(|(dx, dy)| c.get((mid.0 + dx) as usize, (mid.1 + dy) as usize) != PALETTE[1]), "a line at {mid:?}");
        // A constant series sits mid-panel; an empty panel still has axes.
        let lr = &layouts[1];
        let (_, ly0, _, ly1) = lr.plot;
        let y = lr.points[0][0].unwrap().1;
        assert!((y - (ly0 + ly1) / 2).abs() <= 2, "{y} in {ly0}..{ly1}");
        assert_eq!(layouts[2].y_range, (0.0, 1.0));
        // The same figure gives the same bytes.
        assert_eq!(c.to_png(), figure().render().0.to_png());
    }

    #[test]
    fn smoothing_starts_at_the_first_value_and_follows_the_level() {
        // Constant: smoothed is the constant from the first point on (debiased, not pulled to 0).
        let flat: Vec<(f64, f64)> = (0..500).map(|i| (i as f64, 3.0)).collect();
        assert!(smoothed(&flat).iter().all(|q| (q.unwrap().1 - 3.0).abs() < 1e-12));
        // Alternating 0 / 2 around 1: the noise averages out once the window (10 points) is full.
        let noisy: Vec<(f64, f64)> = (0..500).map(|i| (i as f64, if i % 2 == 0 { 0.0 } else { 2.0 })).collect();
        let s = smoothed(&noisy);
        assert_eq!(s[0], Some((0.0, 0.0)));
        assert!(s[100..].iter().all(|q| (q.unwrap().1 - 1.0).abs() < 0.15), "{:?}", &s[100..104]);
        // A missing value stays missing and does not move the average.
        let mut gap = flat.clone();
        gap[10].1 = f64::NAN;
        let s = smoothed(&gap);
        assert!(s[10].is_none() && (s[11].unwrap().1 - 3.0).abs() < 1e-12);
        // A short series still averages over a few points.
        let s = smoothed(&[(1.0, 5.0), (2.0, 7.0)]);
        assert_eq!(s[0], Some((1.0, 5.0)));
        assert!((s[1].unwrap().1 - (0.8 * 0.2 * 5.0 + 0.2 * 7.0) / (0.8 * 0.2 + 0.2)).abs() < 1e-12, "{s:?}");
    }

    /// Two long noisy series: each is drawn faint with its smoothed line in full colour on top,
    /// and the second run's faint values never cover the first run's smoothed line.
    #[test]
    fn long_series_are_drawn_faint_under_their_smoothed_line() {
        let noisy = |level: f64| -> Vec<(f64, f64)> { (0..200).map(|i| (i as f64, level + if i % 2 == 0 { 0.3 } else { -0.3 })).collect() };
        let fig = LineFigure {
            title: String::new(),
            subtitle: String::new(),
            x_label: "step".into(),
            x_log2: false,
            y_min: None,
            legend: vec![],
            panels: vec![LinePanel { title: "loss".into(), series: vec![noisy(1.0), noisy(1.05)], smooth: true }],
            columns: 1,
            panel_width: 500,
            panel_height: 400,
        };
        let (c, layouts) = fig.render();
        let (x0, y0, x1, y1) = layouts[0].plot;
        let count = |color: Rgb| {
            (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| c.get(x as usize, y as usize) == color).count()
        };
        for (s, &color) in PALETTE[..2].iter().enumerate() {
            assert!(count(color) > 200 && count(faint(color)) > 200, "series {s}: {} full, {} faint", count(color), count(faint(color)));
        }
        // Halfway, the first run's smoothed line (about 1.0) is in full colour where it lies.
        let (lo, hi) = layouts[0].y_range;
        let y = y1 - 1 - ((1.0 - lo) / (hi - lo) * (y1 - y0 - 1) as f64).round() as i64;
        let x = (x0 + x1) / 2;
        assert!((y - 2..=y + 2).any(|y| c.get(x as usize, y as usize) == PALETTE[0]), "no smoothed line at ({x}, {y})");
        // Without smoothing the same series are drawn in full colour: the faint colour is left
        // only where an anti-aliased edge happens to blend to it.
        let faint_pixels = count(faint(PALETTE[0]));
        let mut plain = fig.clone();
        plain.panels[0].smooth = false;
        let (c, _) = plain.render();
        let edges = (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| c.get(x as usize, y as usize) == faint(PALETTE[0]))
            .count();
        assert!(edges * 4 < faint_pixels, "{edges} faint pixels without smoothing, {faint_pixels} with");
    }

    #[test]
    fn long_series_are_thinned_to_the_same_band_of_pixels() {
        // 1000 points over 10 columns: each column keeps its first, lowest, highest and last.
        let px: Vec<Option<(f64, f64)>> = (0..1000).map(|i| Some((i as f64 / 100.0, ((i * 37) % 101) as f64))).collect();
        let t = thinned(&px, 10);
        assert!(t.len() <= 40, "{}", t.len());
        for col in 0..10 {
            let all: Vec<f64> = px[col * 100..(col + 1) * 100].iter().map(|q| q.unwrap().1).collect();
            let kept: Vec<(f64, f64)> = t.iter().flatten().copied().filter(|p| p.0.floor() == col as f64).collect();
            let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!(kept.iter().any(|p| p.1 == lo) && kept.iter().any(|p| p.1 == hi), "column {col}: {kept:?}");
            assert_eq!((kept[0], *kept.last().unwrap()), (px[col * 100].unwrap(), px[col * 100 + 99].unwrap()));
        }
        // In x order; a gap stays a gap; short series are left alone.
        assert!(t.iter().flatten().collect::<Vec<_>>().windows(2).all(|w| w[0].0 <= w[1].0));
        let mut gap = px.clone();
        gap[500] = None;
        assert_eq!(thinned(&gap, 10).iter().filter(|q| q.is_none()).count(), 1);
        assert_eq!(thinned(&px[..20], 10), px[..20].to_vec());
    }

    /// Named bins with whiskers: each whisker spans its interval, centred on its bar, and a bar
    /// of 0 keeps its whisker.
    #[test]
    fn categories_and_whiskers() {
        let mut ch = chart(false);
        ch.categories = ["gsm8k", "math500", "humaneval", "mbpp"].map(String::from).to_vec();
        // No bar above 0.5, one whisker up to 0.9: the axis must reach the whisker.
        ch.series[1].values = vec![0.001, 0.0, 0.0, 0.2];
        ch.series[0].intervals = vec![Some((0.3, 0.9)), Some((0.0, 0.114)), None, Some((0.1, 0.4))];
        let (c, l) = ch.render();
        let (lo, hi) = l.y_range;
        let (_, y0, _, y1) = l.plot;
        let y_of = |v: f64| y1 - ((v - lo) / (hi - lo) * (y1 - y0) as f64).round() as i64;
        let Whisker { x, top, bottom, cap } = l.whiskers[0][0].unwrap();
        let bar = l.bars[0][0].unwrap();
        assert_eq!((top, bottom), (y_of(0.9), y_of(0.3)));
        assert!(2 * cap <= (bar.2 - bar.0) / 2, "cap {cap} for a bar {} wide", bar.2 - bar.0);
        assert!((x - (bar.0 + bar.2) / 2).abs() <= 1, "whisker at {x}, bar {bar:?}");
        assert_eq!(c.get(x as usize, ((top + bottom) / 2) as usize), TEXT);
        // Bin 1 has no bar (0) but its whisker [0, 0.114]; bin 2 has no interval.
        assert!(l.bars[0][1].is_none() && l.whiskers[0][1].is_some() && l.whiskers[0][2].is_none());
        assert!(l.whiskers[1].iter().all(|w| w.is_none()));
        // The axis reaches the highest whisker, and category names replace the numeric ticks.
        assert!(hi >= 0.9, "{hi}");
        // The same chart without its names: only they differ, so only they can tell the pixels
        // apart.
        let mut numeric = ch.clone();
        numeric.categories.clear();
        let (n, nl) = numeric.render();
        assert_eq!((nl.plot, &nl.bars), (l.plot, &l.bars), "the same bars in the same place");
        assert_ne!(c.pixels, n.pixels);
    }

    #[test]
    fn png_round_trips_and_is_deterministic() {
        let (c, _) = chart(false).render();
        let bytes = c.to_png();
        assert_eq!(bytes, chart(false).render().0.to_png());
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width as usize, info.height as usize, info.color_type), (c.width, c.height, png::ColorType::Rgb));
        assert_eq!(&buf[..info.buffer_size()], &c.pixels[..]);
    }

    /// One panel under a long subtitle and legend: the figure widens to show them whole, the
    /// panel centred in it.
    #[test]
    fn a_narrow_figure_widens_for_its_text() {
        let mut fig = figure();
        fig.panels.truncate(1);
        fig.columns = 1;
        fig.legend[0].1 = "runs/a-very-long-folder-name/checkpoints/step-000128 (K = 16, temperature 0.6)".repeat(2);
        let (c, layout) = fig.render();
        let legend = 40 + 38 + text_width("dft", LEGEND_PX) + 16 + text_width(&fig.legend[0].1, LEGEND_PX);
        assert!(c.width >= legend + 20 && c.width > 400, "{} for a legend of {legend}", c.width);
        let left = (c.width as i64 - 400) / 2;
        assert_eq!(layout[0].plot.0, left + 78, "centred");
    }

    /// A chart replaces an earlier image, but no other file, and is no folder.
    #[test]
    fn a_chart_replaces_only_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = chart(false).render();
        let png = dir.path().join("chart.png");
        c.save_png(&png).unwrap();
        c.save_png(&png).unwrap();
        let summary = dir.path().join("summary.json");
        std::fs::write(&summary, "{}").unwrap();
        let err = c.save_png(&summary).unwrap_err().to_string();
        assert!(err.ends_with("summary.json exists and is not a PNG image: choose another path, or remove it first"), "{err}");
        assert_eq!(std::fs::read_to_string(&summary).unwrap(), "{}");
        let err = c.save_png(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("is a folder: give the PNG file's name"), "{err}");
        // Another image format's name is refused, not filled with PNG bytes.
        let err = c.save_png(&dir.path().join("chart.jpg")).unwrap_err().to_string();
        assert!(err.contains("chart.jpg: charts are PNG images, not .jpg: name it "), "{err}");
        assert!(err.contains(&format!("name it {}", dir.path().join("chart.png").display())), "{err}");
        assert!(!dir.path().join("chart.jpg").exists());
        c.save_png(&dir.path().join("CHART.PNG")).unwrap();
    }
}
