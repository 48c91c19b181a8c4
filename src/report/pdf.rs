//! A streaming PDF writer for reports (docs/REPORTS.md §3, §6).
//!
//! Objects are written to the file as they are complete (one pdf-writer
//! `Chunk` per object, so each offset is known), pages as they fill, so
//! memory stays bounded however many rows a report has. "Page X of Y" needs
//! Y before it is known: every footer draws a form XObject that is written
//! at the end with the total. The attached proof bundle arrives as an
//! already deflated file and is copied in. The file ends with a `/Sig`
//! dictionary whose `/ByteRange` and `/Contents` are fixed-width
//! placeholders, patched in place by [`sign_file`].

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use chrono::{DateTime, Datelike, Timelike, Utc};
use pdf_writer::types::{AnnotationFlags, AssociationKind, SigFlags};
use pdf_writer::{Chunk, Content, Date, Filter, Finish, Name, Rect, Ref, Str, TextStr};
use sha2::{Digest, Sha256};

use super::font::{Fonts, RESOURCE_NAMES, Style};
use super::sign::SignError;

/// Bytes reserved for the DER CMS in `/Contents` (hex doubles it).
pub const CONTENTS_LEN: usize = 16 * 1024;
const BYTE_RANGE_WIDTH: usize = 48;

const MARGIN: f32 = 40.0;
const HEADER_H: f32 = 30.0;
const FOOTER_H: f32 = 28.0;
const PAD: f32 = 3.0;
const GREY: (f32, f32, f32) = (0.35, 0.35, 0.35);
const RULE: (f32, f32, f32) = (0.78, 0.78, 0.78);
const HEAD_FILL: (f32, f32, f32) = (0.90, 0.92, 0.95);
const TOTAL_XOBJECT: Name<'static> = Name(b"Tot");

/// One table column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header label.
    pub label: String,
    /// Share of the table width (the shares are normalised).
    pub share: f32,
    /// Face of the cells.
    pub style: Style,
}

/// The file attached to the document (`/AFRelationship /Supplement`).
#[derive(Debug, Clone)]
pub struct Attachment {
    /// File name, e.g. `trailmark-proof.jsonl`.
    pub name: &'static str,
    /// Media type, e.g. `application/jsonl`.
    pub media_type: &'static str,
    /// One line saying what it is, with its SHA-256.
    pub description: String,
    /// Its inflated size in bytes.
    pub size: u64,
}

/// What the document says about itself (Info dictionary, XMP, signature).
#[derive(Debug, Clone)]
pub struct Meta {
    /// Title, e.g. "Lineage report R-…".
    pub title: String,
    /// Who generated it (printed name and user ID).
    pub author: String,
    /// Subject line: type and scope.
    pub subject: String,
    /// Generation time.
    pub created: DateTime<Utc>,
    /// Signature reason.
    pub reason: String,
}

struct Page {
    content: Content,
    y: f32,
}

/// A report document being written.
pub struct Doc {
    out: BufWriter<File>,
    pos: u64,
    offsets: Vec<u64>,
    next: i32,
    /// The fonts, shared by measuring and drawing.
    pub fonts: Fonts,
    width: f32,
    height: f32,
    header_left: String,
    header_right: String,
    footer_left: String,
    pages_ref: Ref,
    resources_ref: Ref,
    total_ref: Ref,
    field_ref: Ref,
    pages: Vec<Ref>,
    page: Option<Page>,
    table: Option<(Vec<Column>, Vec<f32>, f32)>,
}

/// Where the signature placeholders ended up.
#[derive(Debug, Clone, Copy)]
pub struct Placeholders {
    byte_range_at: u64,
    contents_at: u64,
    file_len: u64,
}

impl Doc {
    /// Starts a document at `path`, A4 portrait or landscape, with a running
    /// header (left, right) and footer text.
    ///
    /// # Errors
    /// A write failure.
    pub fn create(
        path: &Path,
        landscape: bool,
        header_left: String,
        header_right: String,
        footer_left: String,
    ) -> io::Result<Doc> {
        let file = File::create(path)?;
        let mut doc = Doc {
            out: BufWriter::with_capacity(1 << 16, file),
            pos: 0,
            offsets: vec![0],
            next: 1,
            fonts: Fonts::new([Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4)]),
            width: if landscape { 841.89 } else { 595.28 },
            height: if landscape { 595.28 } else { 841.89 },
            header_left,
            header_right,
            footer_left,
            pages_ref: Ref::new(5),
            resources_ref: Ref::new(6),
            total_ref: Ref::new(7),
            field_ref: Ref::new(8),
            pages: Vec::new(),
            page: None,
            table: None,
        };
        for _ in 0..8 {
            doc.alloc();
        }
        doc.raw(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n")?;
        Ok(doc)
    }

    fn alloc(&mut self) -> Ref {
        let r = Ref::new(self.next);
        self.next += 1;
        self.offsets.push(0);
        r
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes a chunk holding exactly one object, `id`.
    fn emit(&mut self, id: Ref, chunk: &Chunk) -> io::Result<()> {
        self.offsets[id.get() as usize] = self.pos;
        self.raw(chunk.as_bytes())
    }

    /// The usable width between the margins.
    pub fn text_width(&self) -> f32 {
        self.width - 2.0 * MARGIN
    }

    fn bottom(&self) -> f32 {
        MARGIN + FOOTER_H
    }

    fn top(&self) -> f32 {
        self.height - MARGIN - HEADER_H
    }

    fn ensure_page(&mut self) -> io::Result<()> {
        if self.page.is_none() {
            self.new_page()?;
        }
        Ok(())
    }

    fn new_page(&mut self) -> io::Result<()> {
        self.close_page()?;
        let number = self.pages.len() + 1;
        let mut content = Content::new();
        let (w, h) = (self.width, self.height);
        // Running header: left and right text, a rule below.
        let y = h - MARGIN - 10.0;
        let hl = self.header_left.clone();
        let hr = self.header_right.clone();
        draw_text(
            &mut self.fonts,
            &mut content,
            Style::Bold,
            9.0,
            MARGIN,
            y,
            &hl,
            None,
        );
        let rw = self.fonts.width(Style::Mono, &hr, 8.0);
        draw_text(
            &mut self.fonts,
            &mut content,
            Style::Mono,
            8.0,
            w - MARGIN - rw,
            y,
            &hr,
            None,
        );
        rule(&mut content, MARGIN, y - 8.0, w - MARGIN, 0.6, GREY);
        // Footer: origin left, "Page X of" + the total XObject right.
        let fy = MARGIN + 8.0;
        rule(&mut content, MARGIN, fy + 12.0, w - MARGIN, 0.6, GREY);
        let fl = self.footer_left.clone();
        draw_text(
            &mut self.fonts,
            &mut content,
            Style::Regular,
            7.5,
            MARGIN,
            fy,
            &fl,
            Some(GREY),
        );
        let label = format!("Page {number} of ");
        let lw = self.fonts.width(Style::Regular, &label, 8.0);
        let total_w = 24.0;
        let x = w - MARGIN - total_w - lw;
        draw_text(
            &mut self.fonts,
            &mut content,
            Style::Regular,
            8.0,
            x,
            fy,
            &label,
            None,
        );
        content.save_state();
        content.transform([1.0, 0.0, 0.0, 1.0, x + lw, fy]);
        content.x_object(TOTAL_XOBJECT);
        content.restore_state();
        self.page = Some(Page {
            content,
            y: self.top(),
        });
        let r = self.alloc();
        self.pages.push(r);
        // A table continues with its header on the new page.
        if self.table.is_some() {
            self.table_header()?;
        }
        Ok(())
    }

    fn close_page(&mut self) -> io::Result<()> {
        let Some(page) = self.page.take() else {
            return Ok(());
        };
        let page_ref = *self.pages.last().expect("a page is open");
        let content_ref = self.alloc();
        let data = page.content.finish();
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(data.as_slice(), 1);
        let mut c = Chunk::new();
        c.stream(content_ref, &compressed)
            .filter(Filter::FlateDecode);
        self.emit(content_ref, &c)?;
        let mut c = Chunk::new();
        {
            let mut p = c.page(page_ref);
            p.parent(self.pages_ref)
                .media_box(Rect::new(0.0, 0.0, self.width, self.height))
                .contents(content_ref)
                .pair(Name(b"Resources"), self.resources_ref);
            if self.pages.len() == 1 {
                p.annotations([self.field_ref]);
            }
        }
        self.emit(page_ref, &c)
    }

    fn y(&self) -> f32 {
        self.page.as_ref().map_or(0.0, |p| p.y)
    }

    /// Vertical space; starts a new page when it would not fit.
    ///
    /// # Errors
    /// A write failure.
    pub fn space(&mut self, h: f32) -> io::Result<()> {
        self.ensure_page()?;
        if self.y() - h < self.bottom() {
            return self.new_page();
        }
        self.page.as_mut().expect("open").y -= h;
        Ok(())
    }

    /// A paragraph wrapped to the text width.
    ///
    /// # Errors
    /// A write failure.
    pub fn paragraph(&mut self, style: Style, size: f32, text: &str) -> io::Result<()> {
        self.ensure_page()?;
        let width = self.text_width();
        let lines = wrap(&mut self.fonts, style, size, text, width);
        let lead = size * 1.35;
        for line in lines {
            if self.y() - lead < self.bottom() {
                self.new_page()?;
            }
            let y = self.y() - size;
            let Doc { fonts, page, .. } = self;
            let page = page.as_mut().expect("open");
            draw_text(
                fonts,
                &mut page.content,
                style,
                size,
                MARGIN,
                y,
                &line,
                None,
            );
            page.y -= lead;
        }
        Ok(())
    }

    /// A two-column block of label / value pairs (the title block).
    ///
    /// # Errors
    /// A write failure.
    pub fn fields(&mut self, pairs: &[(String, String, Style)]) -> io::Result<()> {
        self.ensure_page()?;
        let label_w = 150.0;
        let value_w = self.text_width() - label_w;
        let size = 9.0;
        let lead = size * 1.4;
        for (label, value, style) in pairs {
            let lines = wrap(&mut self.fonts, *style, size, value, value_w);
            let h = lead * lines.len().max(1) as f32;
            if self.y() - h < self.bottom() {
                self.new_page()?;
            }
            let y0 = self.y();
            let Doc { fonts, page, .. } = self;
            let page = page.as_mut().expect("open");
            draw_text(
                fonts,
                &mut page.content,
                Style::Bold,
                size,
                MARGIN,
                y0 - size,
                label,
                Some(GREY),
            );
            for (i, line) in lines.iter().enumerate() {
                let y = y0 - size - lead * i as f32;
                draw_text(
                    fonts,
                    &mut page.content,
                    *style,
                    size,
                    MARGIN + label_w,
                    y,
                    line,
                    None,
                );
            }
            page.y -= h;
        }
        Ok(())
    }

    /// Starts a table: its header is drawn now and on every page it continues on.
    ///
    /// # Errors
    /// A write failure.
    pub fn table(&mut self, columns: Vec<Column>, size: f32) -> io::Result<()> {
        self.ensure_page()?;
        let total: f32 = columns.iter().map(|c| c.share).sum();
        let widths = columns
            .iter()
            .map(|c| c.share / total * self.text_width())
            .collect();
        self.table = Some((columns, widths, size));
        if self.y() - 4.0 * size < self.bottom() {
            return self.new_page(); // draws the header
        }
        self.table_header()
    }

    /// Ends the current table.
    pub fn end_table(&mut self) {
        self.table = None;
    }

    fn table_header(&mut self) -> io::Result<()> {
        let (columns, widths, size) = self.table.clone().expect("a table is open");
        let cells: Vec<String> = columns.iter().map(|c| c.label.clone()).collect();
        let styles = vec![Style::Bold; columns.len()];
        let lines: Vec<Vec<String>> = cells
            .iter()
            .zip(&widths)
            .map(|(t, w)| wrap(&mut self.fonts, Style::Bold, size, t, w - 2.0 * PAD))
            .collect();
        self.draw_row(&lines, &styles, &widths, size, Some(HEAD_FILL), false);
        Ok(())
    }

    /// One table row; long rows break across pages, continuing under the
    /// repeated header.
    ///
    /// # Errors
    /// A write failure.
    pub fn row(&mut self, cells: &[String]) -> io::Result<()> {
        self.ensure_page()?;
        let (columns, widths, size) = self.table.clone().expect("a table is open");
        let styles: Vec<Style> = columns.iter().map(|c| c.style).collect();
        let mut lines: Vec<Vec<String>> = cells
            .iter()
            .zip(&widths)
            .zip(&styles)
            .map(|((t, w), s)| wrap(&mut self.fonts, *s, size, t, w - 2.0 * PAD))
            .collect();
        let lead = size * 1.3;
        loop {
            let n = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let room = ((self.y() - self.bottom() - 2.0 * PAD) / lead)
                .floor()
                .max(0.0) as usize;
            if n <= room {
                self.draw_row(&lines, &styles, &widths, size, None, true);
                return Ok(());
            }
            // Split only rows taller than a few lines, and only when a
            // useful part fits; otherwise move the whole row on.
            let fresh_room = ((self.top() - self.bottom() - 2.0 * PAD) / lead) as usize - 3;
            if n > 6.min(fresh_room) && room >= 3 {
                let rest: Vec<Vec<String>> = lines
                    .iter_mut()
                    .map(|l| {
                        if l.len() > room {
                            l.split_off(room)
                        } else {
                            Vec::new()
                        }
                    })
                    .collect();
                self.draw_row(&lines, &styles, &widths, size, None, true);
                lines = rest;
            }
            self.new_page()?;
        }
    }

    /// A full-width band inside a table (a group heading or totals line).
    ///
    /// # Errors
    /// A write failure.
    pub fn band(&mut self, text: &str) -> io::Result<()> {
        self.ensure_page()?;
        let (_, widths, size) = self.table.clone().expect("a table is open");
        let full: f32 = widths.iter().sum();
        let lines = vec![wrap(
            &mut self.fonts,
            Style::Bold,
            size,
            text,
            full - 2.0 * PAD,
        )];
        let lead = size * 1.3;
        if self.y() - lead * lines[0].len() as f32 - 2.0 * PAD - 3.0 * lead < self.bottom() {
            self.new_page()?;
        }
        self.draw_row(
            &lines,
            &[Style::Bold],
            &[full],
            size,
            Some((0.96, 0.96, 0.96)),
            true,
        );
        Ok(())
    }

    fn draw_row(
        &mut self,
        lines: &[Vec<String>],
        styles: &[Style],
        widths: &[f32],
        size: f32,
        fill: Option<(f32, f32, f32)>,
        underline: bool,
    ) {
        let lead = size * 1.3;
        let n = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let h = n as f32 * lead + 2.0 * PAD;
        let y0 = self.y();
        let right = MARGIN + widths.iter().sum::<f32>();
        let Doc { fonts, page, .. } = self;
        let page = page.as_mut().expect("open");
        let c = &mut page.content;
        if let Some((r, g, b)) = fill {
            c.save_state();
            c.set_fill_rgb(r, g, b);
            c.rect(MARGIN, y0 - h, right - MARGIN, h);
            c.fill_nonzero();
            c.restore_state();
        }
        let mut x = MARGIN;
        for ((cell, w), style) in lines.iter().zip(widths).zip(styles) {
            for (i, line) in cell.iter().enumerate() {
                let y = y0 - PAD - size - lead * i as f32 + 0.2 * size;
                draw_text(fonts, c, *style, size, x + PAD, y, line, None);
            }
            x += w;
        }
        if underline {
            rule(c, MARGIN, y0 - h, right, 0.4, RULE);
        }
        page.y -= h;
    }

    /// Finishes the document: the last page, the page total, fonts,
    /// resources, the attached bundle (`bundle`: zlib-deflated bytes,
    /// `bundle_size`: inflated size), XMP, the signature field and
    /// placeholders, catalog, cross-reference table and trailer.
    ///
    /// # Errors
    /// A write failure, or a font that cannot be subset.
    pub fn finish(
        mut self,
        meta: &Meta,
        bundle: &mut File,
        attachment: &Attachment,
    ) -> io::Result<(Placeholders, u64)> {
        self.ensure_page()?;
        self.close_page()?;
        let total = self.pages.len();
        self.write_page_total(total)?;
        self.write_fonts_and_resources()?;
        self.write_page_tree(total)?;
        let spec = self.write_attachment(meta, bundle, attachment)?;
        let xmp = self.write_xmp(meta)?;
        let info = self.write_info(meta)?;
        let (sig, byte_range_at, contents_at) = self.write_signature_dictionary(meta)?;
        self.write_signature_field(sig)?;
        let catalog = self.write_catalog(xmp, spec, attachment)?;
        self.write_xref_and_trailer(meta, catalog, info)?;
        self.out.flush()?;
        let file = self.out.get_ref();
        file.sync_all()?;
        Ok((
            Placeholders {
                byte_range_at,
                contents_at,
                file_len: self.pos,
            },
            total as u64,
        ))
    }

    /// The page total, drawn by every footer: a form XObject.
    fn write_page_total(&mut self, total: usize) -> io::Result<()> {
        let mut tc = Content::new();
        draw_text(
            &mut self.fonts,
            &mut tc,
            Style::Regular,
            8.0,
            0.0,
            0.0,
            &total.to_string(),
            None,
        );
        let data = tc.finish();
        let mut c = Chunk::new();
        c.form_xobject(self.total_ref, data.as_slice())
            .bbox(Rect::new(0.0, -4.0, 40.0, 12.0))
            .pair(Name(b"Resources"), self.resources_ref);
        self.emit(self.total_ref, &c)
    }

    /// The fonts (subset now), then the shared resources naming them.
    fn write_fonts_and_resources(&mut self) -> io::Result<()> {
        let objects = {
            let (next, offsets) = (&mut self.next, &mut self.offsets);
            let mut alloc = || {
                let r = Ref::new(*next);
                *next += 1;
                offsets.push(0);
                r
            };
            self.fonts.write(&mut alloc).map_err(io::Error::other)?
        };
        for (r, chunk) in &objects {
            self.emit(*r, chunk)?;
        }
        drop(objects);
        let mut c = Chunk::new();
        {
            let mut d = c.indirect(self.resources_ref).dict();
            let mut f = d.insert(Name(b"Font")).dict();
            for (i, name) in RESOURCE_NAMES.iter().enumerate() {
                f.pair(*name, Ref::new(i as i32 + 1));
            }
            f.finish();
            d.insert(Name(b"XObject"))
                .dict()
                .pair(TOTAL_XOBJECT, self.total_ref);
        }
        self.emit(self.resources_ref, &c)
    }

    /// The page tree over the `total` pages written.
    fn write_page_tree(&mut self, total: usize) -> io::Result<()> {
        let mut c = Chunk::new();
        c.pages(self.pages_ref)
            .kids(self.pages.iter().copied())
            .count(i32::try_from(total).unwrap_or(i32::MAX));
        self.emit(self.pages_ref, &c)
    }

    /// The attached file, copied in from its deflated file, and its file
    /// specification (returned).
    fn write_attachment(
        &mut self,
        meta: &Meta,
        bundle: &mut File,
        attachment: &Attachment,
    ) -> io::Result<Ref> {
        let bundle_size = attachment.size;
        let ef = self.alloc();
        let compressed_len = bundle.seek(SeekFrom::End(0))?;
        bundle.seek(SeekFrom::Start(0))?;
        self.offsets[ef.get() as usize] = self.pos;
        let head = format!(
            "{} 0 obj\n<<\n  /Type /EmbeddedFile\n  /Subtype /{}\n  /Filter /FlateDecode\n  /Params << /Size {bundle_size} /CreationDate {} >>\n  /Length {compressed_len}\n>>\nstream\n",
            ef.get(),
            attachment.media_type.replace('/', "#2F"),
            pdf_date_literal(meta.created)
        );
        self.raw(head.as_bytes())?;
        let copied = io::copy(&mut bundle.take(compressed_len), &mut self.out)?;
        self.pos += copied;
        self.raw(b"\nendstream\nendobj\n\n")?;

        let spec = self.alloc();
        let mut c = Chunk::new();
        {
            let mut fs = c.file_spec(spec);
            fs.path(Str(attachment.name.as_bytes()))
                .unic_file(TextStr(attachment.name))
                .description(TextStr(&attachment.description))
                .association_kind(AssociationKind::Supplement);
            fs.insert(Name(b"EF"))
                .dict()
                .pair(Name(b"F"), ef)
                .pair(Name(b"UF"), ef);
        }
        self.emit(spec, &c)?;
        Ok(spec)
    }

    /// XMP metadata (PDF/A-friendly; no conformance claim, REPORTS.md §3).
    fn write_xmp(&mut self, meta: &Meta) -> io::Result<Ref> {
        let xmp_ref = self.alloc();
        let xmp = xmp_packet(meta);
        let mut c = Chunk::new();
        c.metadata(xmp_ref, xmp.as_bytes());
        self.emit(xmp_ref, &c)?;
        Ok(xmp_ref)
    }

    /// The Info dictionary.
    fn write_info(&mut self, meta: &Meta) -> io::Result<Ref> {
        let info = self.alloc();
        let mut c = Chunk::new();
        c.indirect(info)
            .start::<pdf_writer::writers::DocumentInfo>()
            .title(TextStr(&meta.title))
            .author(TextStr(&meta.author))
            .subject(TextStr(&meta.subject))
            .creator(TextStr("Trailmark"))
            .producer(TextStr(concat!("Trailmark ", env!("CARGO_PKG_VERSION"))))
            .creation_date(pdf_date(meta.created));
        self.emit(info, &c)?;
        Ok(info)
    }

    /// The signature dictionary, hand-written so that the placeholders sit
    /// at known offsets. Returns it with the offsets of the `/ByteRange`
    /// and `/Contents` placeholders.
    fn write_signature_dictionary(&mut self, meta: &Meta) -> io::Result<(Ref, u64, u64)> {
        let sig = self.alloc();
        self.offsets[sig.get() as usize] = self.pos;
        let head = format!(
            "{} 0 obj\n<<\n  /Type /Sig\n  /Filter /Adobe.PPKLite\n  /SubFilter /ETSI.CAdES.detached\n  /M {}\n  /Reason {}\n  /ByteRange ",
            sig.get(),
            pdf_date_literal(meta.created),
            pdf_text_literal(&meta.reason)
        );
        self.raw(head.as_bytes())?;
        let byte_range_at = self.pos;
        self.raw(&[b' '; BYTE_RANGE_WIDTH])?;
        self.raw(b"\n  /Contents ")?;
        let contents_at = self.pos;
        self.raw(b"<")?;
        let zeros = vec![b'0'; 2 * CONTENTS_LEN];
        self.raw(&zeros)?;
        self.raw(b">\n>>\nendobj\n\n")?;
        Ok((sig, byte_range_at, contents_at))
    }

    /// The invisible signature field on page 1, whose value is `sig`.
    fn write_signature_field(&mut self, sig: Ref) -> io::Result<()> {
        let mut c = Chunk::new();
        {
            let mut field = c.form_field(self.field_ref);
            field
                .field_type(pdf_writer::types::FieldType::Signature)
                .partial_name(TextStr("Trailmark report signature"))
                .pair(Name(b"V"), sig);
            let mut annot = field.into_annotation();
            annot
                .rect(Rect::new(0.0, 0.0, 0.0, 0.0))
                .flags(AnnotationFlags::PRINT | AnnotationFlags::LOCKED)
                .page(self.pages[0]);
        }
        self.emit(self.field_ref, &c)
    }

    /// The catalog: pages, metadata, the attachment and the signature form.
    fn write_catalog(&mut self, xmp: Ref, spec: Ref, attachment: &Attachment) -> io::Result<Ref> {
        let catalog = self.alloc();
        let mut c = Chunk::new();
        {
            let mut cat = c.indirect(catalog).start::<pdf_writer::writers::Catalog>();
            cat.pages(self.pages_ref).metadata(xmp);
            cat.lang(TextStr("en"));
            cat.names()
                .embedded_files()
                .names()
                .insert(Str(attachment.name.as_bytes()), spec);
            cat.insert(Name(b"AF")).array().item(spec);
            cat.form()
                .fields([self.field_ref])
                .sig_flags(SigFlags::SIGNATURES_EXIST | SigFlags::APPEND_ONLY);
        }
        self.emit(catalog, &c)?;
        Ok(catalog)
    }

    /// The cross-reference table and the trailer.
    fn write_xref_and_trailer(&mut self, meta: &Meta, catalog: Ref, info: Ref) -> io::Result<()> {
        let xref_at = self.pos;
        let mut x = format!("xref\n0 {}\n0000000000 65535 f \n", self.offsets.len());
        for (i, off) in self.offsets.iter().enumerate().skip(1) {
            if *off == 0 {
                return Err(io::Error::other(format!("object {i} was never written")));
            }
            x.push_str(&format!("{off:010} 00000 n \n"));
        }
        let id =
            hex::encode_upper(&Sha256::digest(format!("{}{}", meta.title, meta.created))[..16]);
        x.push_str(&format!(
            "trailer\n<< /Size {} /Root {} 0 R /Info {} 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref_at}\n%%EOF\n",
            self.offsets.len(),
            catalog.get(),
            info.get()
        ));
        self.raw(x.as_bytes())
    }
}

/// Patches the byte range, hashes the file outside `/Contents`, asks `sign`
/// for the DER CMS of that digest, and patches it in. Returns the SHA-256 of
/// the finished file.
///
/// # Errors
/// A read or write failure, a CMS larger than the placeholder, or a signing
/// failure.
pub fn sign_file(
    path: &Path,
    at: Placeholders,
    sign: impl FnOnce(&[u8; 32]) -> Result<Vec<u8>, SignError>,
) -> io::Result<String> {
    let lt = at.contents_at;
    let gt = lt + 1 + 2 * CONTENTS_LEN as u64; // position of '>'
    let range = [0, lt, gt + 1, at.file_len - (gt + 1)];
    let mut text = format!("[{} {} {} {}]", range[0], range[1], range[2], range[3]).into_bytes();
    if text.len() > BYTE_RANGE_WIDTH {
        return Err(io::Error::other("byte range does not fit its placeholder"));
    }
    text.resize(BYTE_RANGE_WIDTH, b' ');
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    f.seek(SeekFrom::Start(at.byte_range_at))?;
    f.write_all(&text)?;
    f.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    copy_into(&mut (&mut f).take(lt), &mut hasher)?;
    f.seek(SeekFrom::Start(gt + 1))?;
    copy_into(&mut (&mut f).take(range[3]), &mut hasher)?;
    let digest: [u8; 32] = hasher.finalize().into();
    let cms = sign(&digest).map_err(io::Error::other)?;
    if cms.len() > CONTENTS_LEN {
        return Err(io::Error::other(format!(
            "the CMS signature ({} bytes) does not fit the {CONTENTS_LEN}-byte placeholder",
            cms.len()
        )));
    }
    let mut hex = hex::encode_upper(&cms).into_bytes();
    hex.resize(2 * CONTENTS_LEN, b'0');
    f.seek(SeekFrom::Start(lt + 1))?;
    f.write_all(&hex)?;
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    let mut whole = Sha256::new();
    copy_into(&mut f, &mut whole)?;
    Ok(hex::encode(whole.finalize()))
}

pub(crate) fn copy_into(r: &mut impl Read, h: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_text(
    fonts: &mut Fonts,
    c: &mut Content,
    style: Style,
    size: f32,
    x: f32,
    y: f32,
    text: &str,
    colour: Option<(f32, f32, f32)>,
) {
    if text.is_empty() {
        return;
    }
    let runs = fonts.runs(style, text, size);
    if let Some((r, g, b)) = colour {
        c.save_state();
        c.set_fill_rgb(r, g, b);
    }
    c.begin_text();
    c.set_text_matrix([1.0, 0.0, 0.0, 1.0, x, y]);
    for run in &runs {
        c.set_font(run.font, size);
        c.show(Str(&run.cids));
    }
    c.end_text();
    if colour.is_some() {
        c.restore_state();
    }
}

fn rule(c: &mut Content, x0: f32, y: f32, x1: f32, width: f32, (r, g, b): (f32, f32, f32)) {
    c.save_state();
    c.set_stroke_rgb(r, g, b);
    c.set_line_width(width);
    c.move_to(x0, y);
    c.line_to(x1, y);
    c.stroke();
    c.restore_state();
}

/// Greedy word wrap; explicit newlines break; a word wider than the column
/// is broken between characters.
pub fn wrap(fonts: &mut Fonts, style: Style, size: f32, text: &str, width: f32) -> Vec<String> {
    let mut out = Vec::new();
    let space = fonts.width(style, " ", size);
    for para in text.split('\n') {
        let mut line = String::new();
        let mut line_w = 0.0;
        for word in para.split(' ').filter(|w| !w.is_empty()) {
            let w = fonts.width(style, word, size);
            let extra = if line.is_empty() { w } else { space + w };
            if line_w + extra <= width {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
                line_w += extra;
                continue;
            }
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
                line_w = 0.0;
            }
            if w <= width {
                line.push_str(word);
                line_w = w;
                continue;
            }
            // Break the long word between characters.
            for ch in word.chars() {
                let cw = fonts.width(style, ch.encode_utf8(&mut [0; 4]), size);
                if line_w + cw > width && !line.is_empty() {
                    out.push(std::mem::take(&mut line));
                    line_w = 0.0;
                }
                line.push(ch);
                line_w += cw;
            }
        }
        out.push(line);
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

fn pdf_date(t: DateTime<Utc>) -> Date {
    Date::new(u16::try_from(t.year()).unwrap_or(2000))
        .month(t.month() as u8)
        .day(t.day() as u8)
        .hour(t.hour() as u8)
        .minute(t.minute() as u8)
        .second(t.second() as u8)
        .utc_offset_hour(0)
        .utc_offset_minute(0)
}

fn pdf_date_literal(t: DateTime<Utc>) -> String {
    format!("(D:{}Z)", t.format("%Y%m%d%H%M%S"))
}

/// A PDF text string literal: ASCII as is (escaped), anything else as
/// UTF-16BE hex with a BOM.
fn pdf_text_literal(s: &str) -> String {
    if s.is_ascii() {
        let mut out = String::from("(");
        for c in s.chars() {
            if matches!(c, '(' | ')' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push(')');
        out
    } else {
        let mut out = String::from("<FEFF");
        for u in s.encode_utf16() {
            out.push_str(&format!("{u:04X}"));
        }
        out.push('>');
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xmp_packet(meta: &Meta) -> String {
    let created = meta
        .created
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
   <dc:format>application/pdf</dc:format>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>{author}</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{subject}</rdf:li></rdf:Alt></dc:description>
   <xmp:CreateDate>{created}</xmp:CreateDate>
   <xmp:ModifyDate>{created}</xmp:ModifyDate>
   <xmp:CreatorTool>Trailmark</xmp:CreatorTool>
   <pdf:Producer>Trailmark {version}</pdf:Producer>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="r"?>"#,
        title = xml_escape(&meta.title),
        author = xml_escape(&meta.author),
        subject = xml_escape(&meta.subject),
        version = env!("CARGO_PKG_VERSION"),
    )
}
