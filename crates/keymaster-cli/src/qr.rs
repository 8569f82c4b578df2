//! QR codes of a code: in the terminal (unicode half blocks, two rows per character), and as a
//! PNG or SVG file. The QR code holds the normalised code alone — no URL, no label — so that any
//! scanner hands over exactly what a person would type. Drawing is the `qrcode` crate's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use qrcode::render::{svg, unicode};
use qrcode::QrCode;

/// The image format of `--qr FILE`, decided by the file's extension when the flag is parsed,
/// so that a wrong name fails before anything is deposited.
#[derive(Debug, Clone)]
pub enum QrFile {
    Png(PathBuf),
    Svg(PathBuf),
}

impl std::str::FromStr for QrFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = PathBuf::from(s);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(QrFile::Png(path)),
            Some("svg") => Ok(QrFile::Svg(path)),
            _ => Err("the file name must end in .png or .svg".to_owned()),
        }
    }
}

fn qr(code: &str) -> anyhow::Result<QrCode> {
    QrCode::new(code.as_bytes()).context("cannot make a QR code of the code")
}

/// The QR code for a terminal: light modules drawn, dark ones left as the (dark) background,
/// with the quiet zone around it that scanners need.
pub fn terminal(code: &str) -> anyhow::Result<String> {
    Ok(qr(code)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Writes the QR code of `code` to `file`.
pub fn write(code: &str, file: &QrFile) -> anyhow::Result<()> {
    let qr = qr(code)?;
    match file {
        QrFile::Png(path) => {
            let image = qr
                .render::<image::Luma<u8>>()
                .min_dimensions(256, 256)
                .quiet_zone(true)
                .build();
            image
                .save_with_format(path, image::ImageFormat::Png)
                .with_context(|| format!("cannot write the QR code to {}", path.display()))
        }
        QrFile::Svg(path) => {
            let text = qr
                .render::<svg::Color<'_>>()
                .min_dimensions(256, 256)
                .quiet_zone(true)
                .build();
            write_file(path, text.as_bytes())
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() {
        bail!("no file name for the QR code");
    }
    std::fs::write(path, bytes)
        .with_context(|| format!("cannot write the QR code to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_picks_the_format() {
        assert!(matches!("a/b.PNG".parse::<QrFile>(), Ok(QrFile::Png(_))));
        assert!(matches!("b.svg".parse::<QrFile>(), Ok(QrFile::Svg(_))));
        assert!("b.jpg".parse::<QrFile>().is_err());
        assert!("png".parse::<QrFile>().is_err());
    }

    #[test]
    fn terminal_rendering_uses_half_blocks_with_a_quiet_zone() {
        let text = terminal("4729104755182036").unwrap();
        assert!(text.contains('▀') || text.contains('▄'));
        // QR version 1 is 21 modules plus 2×4 quiet zone = 29 columns, 15 rows of two.
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 15);
        assert!(lines.iter().all(|l| l.chars().count() == 29));
    }

    #[test]
    fn files_are_written_in_both_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let png = tmp.path().join("c.png");
        write("4729104755182036", &QrFile::Png(png.clone())).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        let svg = tmp.path().join("c.svg");
        write("4729104755182036", &QrFile::Svg(svg.clone())).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    }
}
