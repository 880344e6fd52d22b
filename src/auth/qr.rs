//! The QR code an authenticator app scans: drawn in the terminal, or written as a PNG.

use std::path::Path;

use qrcode::{Color, EcLevel, QrCode};

use crate::store::file::atomic;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the provisioning URI does not fit in a QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("the QR code cannot be made into a PNG: {0}")]
    Image(#[from] image::ImageError),
    #[error("{path}: the PNG cannot be written: {source}")]
    Png {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Modules of light border a scanner needs around the code.
const QUIET_ZONE: usize = 4;
/// Black text on a bright white background, whatever the terminal's own colours are.
const BLACK_ON_WHITE: &str = "\x1b[30;107m";
const RESET: &str = "\x1b[0m";

fn encode(uri: &str) -> Result<QrCode, QrError> {
    Ok(QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)?)
}

/// The QR code drawn with Unicode half blocks (two modules a character, top and bottom), dark modules in
/// black on white with the quiet zone around it. The colours are set explicitly on every line, so the
/// code reads the same on a light and on a dark terminal.
pub fn terminal(uri: &str) -> Result<String, QrError> {
    let code = encode(uri)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = width + 2 * QUIET_ZONE;
    let dark = |x: usize, y: usize| {
        let inside = |v: usize| (QUIET_ZONE..QUIET_ZONE + width).contains(&v);
        inside(x) && inside(y) && colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Dark
    };
    let mut art = String::new();
    for y in (0..side).step_by(2) {
        art.push_str(BLACK_ON_WHITE);
        for x in 0..side {
            art.push(match (dark(x, y), dark(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        art.push_str(RESET);
        art.push('\n');
    }
    art.pop();
    Ok(art)
}

/// The QR code as PNG bytes, at least 256 pixels wide.
pub fn png(uri: &str) -> Result<Vec<u8>, QrError> {
    let image = encode(uri)?
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .build();
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(png.into_inner())
}

/// Writes the QR code as a PNG (`qrcode.png`, as the original did), owner-only (0600): it holds the
/// secret. The file is replaced atomically, so an existing one never stays readable by others.
pub fn write_png(uri: &str, path: &Path) -> Result<(), QrError> {
    let png = png(uri)?;
    atomic::write_atomic(path, &png).map_err(|source| QrError::Png {
        path: path.display().to_string(),
        source,
    })
}
