//! `closed_set!`: a counted enum declared as one table.
//!
//! Counters are arrays indexed by a reason ([`DropReason`](super::DropReason),
//! [`IoDrop`](crate::run::IoDrop)), `uvlan stats` prints every reason by name, and the trace
//! names the kernel rule behind each drop. A hand-kept list of every variant next to the enum
//! can miss one, and a counter indexed past its array panics the dataplane thread. This macro
//! takes one row per variant (its docs, its counter name and, optionally, its kernel rule) and
//! generates from that single table:
//!
//! - the enum (`#[repr(u8)]`, discriminants `0..COUNT` in row order),
//! - `COUNT` and `ALL` (every variant once, `ALL[i].index() == i`),
//! - `index()`, `as_str()` (the snake_case counter name) and `Display`,
//! - with the rule column, `kernel_rule()`.
//!
//! A declarative macro rather than `strum`'s `EnumIter`/`EnumCount`: the counter names are not
//! all the variants' snake_case (`IoDrop::NoWire` is `wire_not_attached`), and `kernel_rule`
//! would still be a hand-written match; here every fact about a reason sits on its row, no
//! dependency is added, and `ALL` stays a `const` array usable as an array length.

/// Declares a closed, counted enum from one table (see the module docs).
///
/// ```text
/// closed_set! {
///     /// Docs of the enum.
///     pub enum Reason {
///         /// Docs of the variant.
///         TooShort = "too_short", "eth_type_trans";
///     }
/// }
/// ```
macro_rules! closed_set {
    // With a kernel rule per row.
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, $rule:literal; )+
        }
    ) => {
        $crate::fwd::closed_set!(@enum $(#[$meta])* $name { $( $(#[$vmeta])* $variant = $text; )+ });

        impl $name {
            /// The kernel function whose rule this is.
            pub fn kernel_rule(self) -> &'static str {
                match self {
                    $( $name::$variant => $rule, )+
                }
            }
        }
    };
    // Names only.
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal; )+
        }
    ) => {
        $crate::fwd::closed_set!(@enum $(#[$meta])* $name { $( $(#[$vmeta])* $variant = $text; )+ });
    };
    (@enum
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Number of variants.
            pub const COUNT: usize = [$( stringify!($variant) ),+].len();

            /// Every variant, in counter order (generated from the declaration).
            pub const ALL: [$name; Self::COUNT] = [$( $name::$variant ),+];

            /// Counter index.
            #[inline]
            pub fn index(self) -> usize {
                self as usize
            }

            /// A short snake_case name for counters.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use closed_set;
