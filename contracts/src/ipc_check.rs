//! A structural check of Arrow IPC messages before arrow-ipc decodes them: arrow-ipc 60 slices
//! buffers without checking their bounds and asserts on buffer lengths, so a tampered message
//! would panic the worker instead of failing one frame.

use arrow_schema::{DataType, Fields, Schema};

/// Walks the stream's messages before arrow-ipc reads them, checking what arrow-ipc 60 trusts
/// and panics on: the schema must pass `check_schema` (so only the expected column types
/// reach the array decoders), and each batch buffer must lie inside the body, with a length that is a whole
/// number of its elements and array lengths that cannot overflow size arithmetic.
pub(crate) fn check_stream<E>(
    bytes: &[u8],
    check_schema: impl Fn(&Schema) -> Result<(), E>,
    ipc: impl Fn(String) -> E,
) -> Result<(), E> {
    let truncated = || ipc("the stream ends inside a message".into());
    let word = |at: usize| -> Result<u32, E> {
        let b = bytes.get(at..at.checked_add(4).ok_or_else(truncated)?);
        let b: [u8; 4] = b.and_then(|b| b.try_into().ok()).ok_or_else(truncated)?;
        Ok(u32::from_le_bytes(b))
    };
    // Element width of each buffer of a batch, in order, once the schema is known.
    let mut widths: Option<Vec<usize>> = None;
    let mut pos = 0;
    while pos < bytes.len() {
        let mut meta_at = pos + 4;
        let mut size = word(pos)?;
        if size == u32::MAX {
            // The continuation marker of the current format; the length follows.
            size = word(meta_at)?;
            meta_at += 4;
        }
        if size == 0 {
            break;
        }
        let meta_end = meta_at.checked_add(size as usize).ok_or_else(truncated)?;
        let meta = bytes.get(meta_at..meta_end).ok_or_else(truncated)?;
        let message = arrow_ipc::root_as_message(meta).map_err(|e| ipc(e.to_string()))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| ipc("negative message body length".into()))?;
        if let Some(fb) = message.header_as_schema() {
            let schema =
                arrow_ipc::convert::try_fb_to_schema(fb).map_err(|e| ipc(e.to_string()))?;
            check_schema(&schema)?;
            let mut w = Vec::new();
            buffer_widths(schema.fields(), &mut w);
            widths = Some(w);
        } else if message.header_as_dictionary_batch().is_some() {
            return Err(ipc(
                "a dictionary batch, but panoptes messages have no dictionary columns".into(),
            ));
        } else if let Some(batch) = message.header_as_record_batch() {
            // Without a schema arrow-ipc refuses the batch itself.
            let widths = widths.as_deref().unwrap_or_default();
            check_batch(batch, body_len, widths).map_err(&ipc)?;
        }
        pos = meta_end.checked_add(body_len).ok_or_else(truncated)?;
        if pos > bytes.len() {
            return Err(truncated());
        }
    }
    Ok(())
}

fn check_batch(
    batch: arrow_ipc::RecordBatch<'_>,
    body_len: usize,
    widths: &[usize],
) -> Result<(), String> {
    // Lengths beyond i32 cannot come from a NATS message.
    let nodes = batch.nodes().into_iter().flatten();
    let lengths =
        std::iter::once(batch.length()).chain(nodes.flat_map(|n| [n.length(), n.null_count()]));
    for n in lengths {
        if !(0..=i64::from(i32::MAX)).contains(&n) {
            return Err(format!("array length {n} is out of range"));
        }
    }
    let buffers = batch.buffers().into_iter().flatten();
    // Buffers beyond the schema's are left to arrow-ipc, which counts them.
    let widths = widths.iter().copied().chain(std::iter::repeat(1));
    for (b, width) in buffers.zip(widths) {
        let bad = |what: &str| {
            Err(format!(
                "a buffer at offset {} of length {} {what}",
                b.offset(),
                b.length()
            ))
        };
        let (Ok(offset), Ok(len)) = (usize::try_from(b.offset()), usize::try_from(b.length()))
        else {
            return bad("is negative");
        };
        if offset.checked_add(len).is_none_or(|end| end > body_len) {
            return bad(&format!("lies outside the {body_len}-byte body"));
        }
        if len % width != 0 {
            return bad(&format!("is not a whole number of {width}-byte values"));
        }
    }
    Ok(())
}

/// The IPC buffer layout of `fields` (depth first, each array's validity bitmap first), as the
/// width of one element of each buffer: bitmaps and bytes 1, offsets 4.
fn buffer_widths(fields: &Fields, out: &mut Vec<usize>) {
    for f in fields {
        out.push(1);
        match f.data_type() {
            DataType::Utf8 | DataType::Binary => out.extend([4, 1]),
            DataType::List(item) => {
                out.push(4);
                buffer_widths(&Fields::from(vec![item.clone()]), out);
            }
            DataType::FixedSizeList(item, _) => {
                buffer_widths(&Fields::from(vec![item.clone()]), out);
            }
            DataType::Struct(children) => buffer_widths(children, out),
            DataType::Boolean => out.push(1),
            t => out.push(t.primitive_width().unwrap_or(1)),
        }
    }
}
