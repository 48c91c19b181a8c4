//! The report fonts (docs/REPORTS.md §3): four committed TrueType faces,
//! text measured and encoded as glyph IDs, and each face written at the end
//! as a subset Type 0 / CIDFontType2 font with Identity-H encoding and a
//! `ToUnicode` map, so that any Unicode name renders and extracts.
//!
//! Glyph IDs are remapped as they are first used (`subsetter`), and the new
//! IDs are the CIDs written into content streams (CIDToGIDMap Identity), so
//! a page can be written before the subset exists.

use std::collections::HashMap;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Chunk, Filter, Name, Rect, Ref, Str};
use subsetter::GlyphRemapper;
use ttf_parser::Face;

/// A face a caller asks for; characters it lacks fall back to Droid Sans
/// Fallback (Han, Kana, Hangul), then to U+FFFD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Noto Sans Regular.
    Regular,
    /// Noto Sans Bold.
    Bold,
    /// Noto Sans Mono: hashes and identifiers.
    Mono,
}

const REGULAR: usize = 0;
const BOLD: usize = 1;
const MONO: usize = 2;
const FALLBACK: usize = 3;

struct Slot {
    name: &'static str,
    data: &'static [u8],
    face: Face<'static>,
    remapper: GlyphRemapper,
    /// For each new glyph ID: the text it stands for and its advance (font units).
    glyphs: Vec<(char, u16)>,
    cache: HashMap<char, Option<u16>>,
}

impl Slot {
    fn new(name: &'static str, data: &'static [u8]) -> Slot {
        let face = Face::parse(data, 0).expect("committed fonts parse");
        Slot {
            name,
            data,
            face,
            remapper: GlyphRemapper::new(),
            glyphs: vec![('\u{FFFD}', 0)],
            cache: HashMap::new(),
        }
    }

    fn glyph(&mut self, c: char) -> Option<u16> {
        if let Some(g) = self.cache.get(&c) {
            return *g;
        }
        let g = self.face.glyph_index(c).map(|g| g.0).filter(|g| *g != 0);
        self.cache.insert(c, g);
        g
    }

    fn advance(&self, gid: u16) -> u16 {
        self.face
            .glyph_hor_advance(ttf_parser::GlyphId(gid))
            .unwrap_or(0)
    }

    fn units(&self) -> f32 {
        f32::from(self.face.units_per_em())
    }

    /// The CID for an original glyph ID, registering it in the subset.
    fn cid(&mut self, c: char, gid: u16) -> u16 {
        let cid = self.remapper.remap(gid);
        if usize::from(cid) == self.glyphs.len() {
            let advance = self.advance(gid);
            self.glyphs.push((c, advance));
        }
        cid
    }
}

/// A run of text in one font: the resource name, the 2-byte CIDs, and its
/// width in points at the size it was made for.
#[derive(Debug, Clone)]
pub struct Run {
    /// Font resource name (`F0`..`F3`).
    pub font: Name<'static>,
    /// Big-endian CIDs, ready for `Tj`.
    pub cids: Vec<u8>,
    /// Width in points.
    pub width: f32,
}

/// A face the subsetter could not cut down: the PDF cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("subsetting {font}: {problem:?}")]
pub struct SubsetError {
    /// The face's name.
    pub font: &'static str,
    /// What the subsetter said.
    pub problem: subsetter::Error,
}

/// The four faces and what has been drawn with them.
pub struct Fonts {
    slots: Vec<Slot>,
    refs: [Ref; 4],
    /// Characters no face has (drawn as U+FFFD).
    pub missing: std::collections::BTreeSet<char>,
}

/// Resource names, by slot.
pub const RESOURCE_NAMES: [Name<'static>; 4] = [Name(b"F0"), Name(b"F1"), Name(b"F2"), Name(b"F3")];

impl Fonts {
    /// The committed fonts; `refs` are the Type 0 font objects' references,
    /// allocated by the caller so pages can name them before they are written.
    pub fn new(refs: [Ref; 4]) -> Fonts {
        Fonts {
            slots: vec![
                Slot::new(
                    "NotoSans-Regular",
                    include_bytes!("fonts/NotoSans-Regular.ttf"),
                ),
                Slot::new("NotoSans-Bold", include_bytes!("fonts/NotoSans-Bold.ttf")),
                Slot::new(
                    "NotoSansMono-Regular",
                    include_bytes!("fonts/NotoSansMono-Regular.ttf"),
                ),
                Slot::new(
                    "DroidSansFallbackFull",
                    include_bytes!("fonts/DroidSansFallbackFull.ttf"),
                ),
            ],
            refs,
            missing: std::collections::BTreeSet::new(),
        }
    }

    fn primary(style: Style) -> usize {
        match style {
            Style::Regular => REGULAR,
            Style::Bold => BOLD,
            Style::Mono => MONO,
        }
    }

    /// Which slot draws `c`, and its original glyph ID.
    fn resolve(&mut self, style: Style, c: char) -> (usize, u16, char) {
        let c = if c.is_control() { ' ' } else { c };
        let primary = Self::primary(style);
        if let Some(g) = self.slots[primary].glyph(c) {
            return (primary, g, c);
        }
        if let Some(g) = self.slots[FALLBACK].glyph(c) {
            return (FALLBACK, g, c);
        }
        if c != '\u{FFFD}' {
            self.missing.insert(c);
        }
        let g = self.slots[REGULAR].glyph('\u{FFFD}').unwrap_or(0);
        (REGULAR, g, '\u{FFFD}')
    }

    /// Width of `text` in points, without registering glyphs.
    pub fn width(&mut self, style: Style, text: &str, size: f32) -> f32 {
        let mut units = 0.0;
        for c in text.chars() {
            let (slot, gid, _) = self.resolve(style, c);
            let s = &self.slots[slot];
            units += f32::from(s.advance(gid)) / s.units();
        }
        units * size
    }

    /// Encodes `text` as runs, registering the glyphs for the subset.
    pub fn runs(&mut self, style: Style, text: &str, size: f32) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        let mut current: Option<usize> = None;
        for c in text.chars() {
            let (slot, gid, shown) = self.resolve(style, c);
            let cid = self.slots[slot].cid(shown, gid);
            let w = f32::from(self.slots[slot].advance(gid)) / self.slots[slot].units() * size;
            if current != Some(slot) {
                out.push(Run {
                    font: RESOURCE_NAMES[slot],
                    cids: Vec::new(),
                    width: 0.0,
                });
                current = Some(slot);
            }
            let run = out.last_mut().expect("pushed above");
            run.cids.extend_from_slice(&cid.to_be_bytes());
            run.width += w;
        }
        out
    }

    /// Writes every face that drew something: subset font program, font
    /// descriptor, CID font, ToUnicode map and the Type 0 font at its
    /// reserved reference. Faces never used get an empty-subset font too,
    /// so every reserved reference is an object. `alloc` hands out new refs.
    ///
    /// # Errors
    /// If subsetting fails.
    pub fn write(&self, alloc: &mut impl FnMut() -> Ref) -> Result<Vec<(Ref, Chunk)>, SubsetError> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let type0 = self.refs[i];
            let cid_ref = alloc();
            let descriptor = alloc();
            let file = alloc();
            let cmap_ref = alloc();
            let subset =
                subsetter::subset(slot.data, 0, &slot.remapper).map_err(|problem| SubsetError {
                    font: slot.name,
                    problem,
                })?;
            let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&subset, 6);
            let tag = subset_tag(i, slot.glyphs.len());
            let base = format!("{tag}+{}", slot.name);
            let base = Name(base.as_bytes());
            let scale = 1000.0 / slot.units();

            let mut chunk = Chunk::new();
            chunk
                .type0_font(type0)
                .base_font(base)
                .encoding_predefined(Name(b"Identity-H"))
                .descendant_font(cid_ref)
                .to_unicode(cmap_ref);
            out.push((type0, std::mem::replace(&mut chunk, Chunk::new())));

            let mut cid = chunk.cid_font(cid_ref);
            cid.subtype(CidFontType::Type2)
                .base_font(base)
                .system_info(SYSTEM_INFO)
                .font_descriptor(descriptor)
                .default_width(0.0)
                .cid_to_gid_map_predefined(Name(b"Identity"));
            cid.widths().consecutive(
                0,
                slot.glyphs.iter().map(|(_, adv)| f32::from(*adv) * scale),
            );
            drop(cid);
            out.push((cid_ref, std::mem::replace(&mut chunk, Chunk::new())));

            let f = &slot.face;
            let bb = f.global_bounding_box();
            let mut flags = FontFlags::NON_SYMBOLIC;
            if i == MONO {
                flags |= FontFlags::FIXED_PITCH;
            }
            chunk
                .font_descriptor(descriptor)
                .name(base)
                .flags(flags)
                .bbox(Rect::new(
                    f32::from(bb.x_min) * scale,
                    f32::from(bb.y_min) * scale,
                    f32::from(bb.x_max) * scale,
                    f32::from(bb.y_max) * scale,
                ))
                .italic_angle(0.0)
                .ascent(f32::from(f.ascender()) * scale)
                .descent(f32::from(f.descender()) * scale)
                .cap_height(f32::from(f.capital_height().unwrap_or(f.ascender())) * scale)
                .stem_v(if i == BOLD { 140.0 } else { 80.0 })
                .font_file2(file);
            out.push((descriptor, std::mem::replace(&mut chunk, Chunk::new())));

            chunk
                .stream(file, &compressed)
                .filter(Filter::FlateDecode)
                .pair(
                    Name(b"Length1"),
                    i32::try_from(subset.len()).unwrap_or(i32::MAX),
                );
            out.push((file, std::mem::replace(&mut chunk, Chunk::new())));

            let mut cmap = UnicodeCmap::new(Name(b"Custom"), SYSTEM_INFO);
            for (cid, (c, _)) in slot.glyphs.iter().enumerate().skip(1) {
                cmap.pair(u16::try_from(cid).unwrap_or(u16::MAX), *c);
            }
            let cmap = cmap.finish();
            chunk.cmap(cmap_ref, cmap.as_slice());
            out.push((cmap_ref, chunk));
        }
        Ok(out)
    }
}

const SYSTEM_INFO: SystemInfo = SystemInfo {
    registry: Str(b"Adobe"),
    ordering: Str(b"Identity"),
    supplement: 0,
};

/// The six-letter subset tag (ISO 32000 §9.6.4), derived from the slot and
/// the subset's size so that it differs between subsets of one file.
fn subset_tag(slot: usize, glyphs: usize) -> String {
    let mut n = (slot as u64 + 1) * 1_000_003 + glyphs as u64 * 7_919;
    (0..6)
        .map(|_| {
            let c = char::from(b'A' + (n % 26) as u8);
            n /= 26;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fonts() -> Fonts {
        Fonts::new([Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4)])
    }

    #[test]
    fn latin_names_stay_in_the_primary_face_and_han_falls_back() {
        let mut f = fonts();
        let runs = f.runs(Style::Regular, "Łukasz Müller 李雷", 10.0);
        assert_eq!(runs.len(), 2, "Latin in F0, Han in F3");
        assert_eq!(runs[0].font, Name(b"F0"));
        assert_eq!(runs[1].font, Name(b"F3"));
        assert_eq!(runs[1].cids.len(), 4, "two Han glyphs, two bytes each");
        assert!(f.missing.is_empty());
    }

    #[test]
    fn widths_match_between_measuring_and_encoding() {
        let mut f = fonts();
        let w = f.width(Style::Mono, "0123abcd", 8.0);
        let runs = f.runs(Style::Mono, "0123abcd", 8.0);
        assert!((w - runs[0].width).abs() < 0.001);
        // Monospace: every glyph has the same advance.
        assert!(
            (f.width(Style::Mono, "iiii", 8.0) - f.width(Style::Mono, "WWWW", 8.0)).abs() < 0.001
        );
    }

    #[test]
    fn a_character_no_face_has_is_drawn_as_the_replacement_and_noted() {
        let mut f = fonts();
        let runs = f.runs(Style::Regular, "\u{1F600}", 10.0);
        assert_eq!(runs.len(), 1);
        assert!(f.missing.contains(&'\u{1F600}'));
    }

    #[test]
    fn the_same_character_gets_the_same_cid() {
        let mut f = fonts();
        let a = f.runs(Style::Regular, "aa", 10.0);
        assert_eq!(a[0].cids[0..2], a[0].cids[2..4]);
    }
}
