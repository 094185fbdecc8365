/* placeholder: replaced by the module owner */
typedef int placeholder_unused;
